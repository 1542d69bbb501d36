package machine

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/internal/datarange"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

// Limits on what an operation may carry.
const (
	MaxNameLen      = 128
	MaxGroupLen     = 256
	MaxKeyLen       = 256
	MaxResultBytes  = 64 << 10
	MaxErrorBytes   = 4 << 10
	MaxJobsPerPush  = 10000
	MaxDeps         = 100
	MaxCapacity     = 10000
	MaxKVOps        = 128
	purgeBatch      = 10000
	redriveDefault  = 1000
	noTime          = math.MinInt64
	stalePrefix     = "queue: stale token"
	notRunningInfix = "is not running"
)

// applier applies one command.
type applier struct {
	m   *Machine
	env *datarange.Env
	w   *writer
	now int64
	eff Effect
	// touched are the queues to dispatch once the command's operations
	// are applied, in the order first touched.
	touched []*queue
	// promoted counts the cold jobs promoted ahead of their time.
	promoted int
}

func (m *Machine) newApplier(env *datarange.Env, now int64) *applier {
	return &applier{m: m, env: env, w: newWriter(env), now: now}
}

// finish dispatches the touched queues, makes the writes and records the
// effect.
func (a *applier) finish() error {
	for _, q := range a.touched {
		if err := a.dispatch(q); err != nil {
			return err
		}
	}
	for _, q := range a.touched {
		if q.empty() && q.hotUntil != 0 {
			// Forgotten with the queue: a new one starts without.
			a.w.del(horizonKey(q.name))
			q.hotUntil = 0
		}
	}
	if err := a.w.flush(); err != nil {
		return err
	}
	for _, q := range a.touched {
		if q.empty() {
			delete(a.m.mu.queues, q.name)
		}
	}
	if !a.eff.empty() {
		e := a.eff
		a.env.Effects.Extensions = append(a.env.Effects.Extensions, &e)
	}
	return nil
}

// touch notes that the command works on q, and first advances q's horizon
// if the command's time left it behind.
func (a *applier) touch(q *queue) error {
	if !slices.Contains(a.touched, q) {
		a.touched = append(a.touched, q)
	}
	if q.cold.len() > 0 {
		return a.advance(q)
	}
	return nil
}

// Errors of operations (gRPC status errors, deterministic).

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "queue: "+format, args...)
}

func errNotFound(q string, id uint64) error {
	return status.Errorf(codes.NotFound, "queue: job %d not found in queue %s", id, q)
}

// IsStaleToken reports whether err refused an operation on a job because
// its token was not the job's current one, or the job was not running.
func IsStaleToken(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.FailedPrecondition && len(st.Message()) >= len(stalePrefix) && st.Message()[:len(stalePrefix)] == stalePrefix
}

// CheckName validates a queue, worker or schedule name.
func CheckName(what, s string) error {
	if s == "" {
		return invalid("%s name is empty", what)
	}
	if len(s) > MaxNameLen {
		return invalid("%s name is longer than %d bytes", what, MaxNameLen)
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':' || c == '@'
		if !ok {
			return invalid("%s name %q may hold only letters, digits and - _ . : @", what, s)
		}
	}
	return nil
}

// CheckSpec validates a job to push.
func CheckSpec(s *queuepb.JobSpec) error {
	switch {
	case s == nil:
		return invalid("job without a spec")
	case len(s.Group) > MaxGroupLen:
		return invalid("group is longer than %d bytes", MaxGroupLen)
	case len(s.IdempotencyKey) > MaxKeyLen:
		return invalid("idempotency key is longer than %d bytes", MaxKeyLen)
	case len(s.DependsOn) > MaxDeps:
		return invalid("a job may depend on at most %d jobs", MaxDeps)
	case s.MaxAttempts < 0:
		return invalid("max attempts is negative")
	case s.TimeoutMs < 0:
		return invalid("timeout is negative")
	case s.DelayMs < 0:
		return invalid("delay is negative")
	case s.DelayMs > 0 && s.RunAtMs != 0:
		return invalid("a job has a delay or a run time, not both")
	case !utf8.ValidString(s.Group) || !utf8.ValidString(s.IdempotencyKey):
		return invalid("group and idempotency key must be UTF-8")
	}
	return checkRetry(s.Retry)
}

func checkRetry(p *queuepb.RetryPolicy) error {
	if p == nil {
		return nil
	}
	if p.InitialBackoffMs < 0 || p.MaxBackoffMs < 0 || p.Multiplier < 0 || p.Jitter > 1 || math.IsNaN(p.Multiplier) || math.IsNaN(p.Jitter) {
		return invalid("retry policy: backoffs and multiplier must not be negative, jitter at most 1")
	}
	return nil
}

// checkKVOps validates the compares and puts of a push or completion.
func checkKVOps(cmps []*queuepb.Compare, puts []*queuepb.KeyValuePut) error {
	if len(cmps) > MaxKVOps || len(puts) > MaxKVOps {
		return invalid("at most %d compares and %d puts", MaxKVOps, MaxKVOps)
	}
	for _, c := range cmps {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	seen := map[string]bool{}
	for _, p := range puts {
		if len(p.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
		if keys.IntersectsReserved(p.Key, nil) {
			return status.Error(codes.InvalidArgument, "queue: a put may not write the keys reserved for Synod's services")
		}
		if seen[string(p.Key)] {
			return rpctypes.ErrGRPCDuplicateKey
		}
		seen[string(p.Key)] = true
	}
	return nil
}

// EtcdCompare turns a queue compare into etcd's.
func EtcdCompare(c *queuepb.Compare) *etcdpb.Compare {
	out := &etcdpb.Compare{
		Result:   etcdpb.Compare_CompareResult(c.Result),
		Target:   etcdpb.Compare_CompareTarget(c.Target),
		Key:      c.Key,
		RangeEnd: c.RangeEnd,
	}
	switch t := c.TargetUnion.(type) {
	case *queuepb.Compare_Version:
		out.TargetUnion = &etcdpb.Compare_Version{Version: t.Version}
	case *queuepb.Compare_CreateRevision:
		out.TargetUnion = &etcdpb.Compare_CreateRevision{CreateRevision: t.CreateRevision}
	case *queuepb.Compare_ModRevision:
		out.TargetUnion = &etcdpb.Compare_ModRevision{ModRevision: t.ModRevision}
	case *queuepb.Compare_Value:
		out.TargetUnion = &etcdpb.Compare_Value{Value: t.Value}
	case *queuepb.Compare_Lease:
		out.TargetUnion = &etcdpb.Compare_Lease{Lease: t.Lease}
	}
	return out
}

// kvOps checks and evaluates the compares of an operation and gathers its
// puts; it fails, having written nothing, if a compare fails or a put
// names a lease that does not exist.
func (a *applier) kvOps(cmps []*queuepb.Compare, puts []*queuepb.KeyValuePut) error {
	// The queues live in the first data range: on a store split into
	// ranges, keys of another range are not its to read or write (its
	// apply would read state the other range's log decides, and write
	// keys outside that range's log, snapshots and index).
	for _, c := range cmps {
		if !a.env.Holds(c.Key, c.RangeEnd) {
			return a.outsideRange(c.Key)
		}
	}
	for _, p := range puts {
		if !a.env.Holds(p.Key, nil) {
			return a.outsideRange(p.Key)
		}
	}
	for _, p := range puts {
		if p.Lease == 0 {
			continue
		}
		ok, err := a.env.Leases.Exists(p.Lease)
		if err != nil {
			return fmt.Errorf("look up lease %x: %w", p.Lease, err)
		}
		if !ok {
			return rpctypes.ErrGRPCLeaseNotFound
		}
	}
	if len(cmps) > 0 {
		// The compares must see the writes of the operations before.
		if err := a.w.flush(); err != nil {
			return err
		}
		txn := &etcdpb.TxnRequest{}
		for _, c := range cmps {
			txn.Compare = append(txn.Compare, EtcdCompare(c))
		}
		resp, err := a.env.KV.Txn(txn)
		if err != nil {
			if _, ok := status.FromError(err); ok {
				return err
			}
			return fmt.Errorf("evaluate compares: %w", err)
		}
		if !resp.Succeeded {
			return status.Error(codes.FailedPrecondition, "queue: compare failed")
		}
	}
	return nil
}

// outsideRange is the error of a compare or put of key outside the
// queues' range.
func (a *applier) outsideRange(key []byte) error {
	end := "the end of the keyspace"
	if a.env.End != nil {
		end = fmt.Sprintf("%q", a.env.End)
	}
	return status.Errorf(codes.FailedPrecondition, "queue: key %q lies outside the data range that holds the queues ([%q, %s)): on a store split into ranges, the compares and puts of a push or completion must lie in it", key, a.env.Start, end)
}

func (a *applier) writePuts(puts []*queuepb.KeyValuePut) {
	for _, p := range puts {
		a.w.putRaw(p.Key, p.Value, p.Lease)
	}
}

// isStatus reports whether err is an operation's own error (a gRPC
// status), as opposed to a storage failure.
func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

// op applies one operation. A returned error is a storage failure; the
// operation's own error is in the result.
func (a *applier) op(op *queuewire.Op) (OpResult, error) {
	if err := CheckName("queue", op.Queue); err != nil {
		return OpResult{Err: err}, nil
	}
	resp, err := a.dispatchOp(op)
	if err != nil {
		if isStatus(err) {
			return OpResult{Err: err}, nil
		}
		return OpResult{}, err
	}
	return OpResult{Resp: resp}, nil
}

func (a *applier) dispatchOp(op *queuewire.Op) (proto.Message, error) {
	q := a.m.queueLocked(op.Queue)
	if err := a.touch(q); err != nil {
		return nil, err
	}
	switch o := op.Op.(type) {
	case *queuewire.Op_Push:
		return a.push(q, o.Push)
	case *queuewire.Op_Attach:
		return nil, a.attach(q, o.Attach)
	case *queuewire.Op_Detach:
		return nil, a.detach(q, o.Detach)
	case *queuewire.Op_Finish:
		f := o.Finish
		if f.Error == "" {
			return nil, a.complete(q, f.Id, f.Token, f.Result, nil, nil)
		}
		return a.fail(q, f.Id, f.Token, f.Error, f.Permanent, f.RetryAfterMs)
	case *queuewire.Op_Complete:
		c := o.Complete
		return nil, a.complete(q, c.Id, c.Token, c.Result, c.Compares, c.Puts)
	case *queuewire.Op_Extend:
		return a.extend(q, o.Extend)
	case *queuewire.Op_Progress:
		return nil, a.progress(q, o.Progress)
	case *queuewire.Op_Cancel:
		return a.cancel(q, o.Cancel.Id)
	case *queuewire.Op_Configure:
		return a.configure(q, o.Configure)
	case *queuewire.Op_Redrive:
		return a.redrive(q, o.Redrive)
	case *queuewire.Op_Purge:
		return a.purge(q, o.Purge)
	case *queuewire.Op_PutSchedule:
		return a.putSchedule(q, o.PutSchedule)
	case *queuewire.Op_DeleteSchedule:
		return a.deleteSchedule(q, o.DeleteSchedule)
	}
	return nil, invalid("unknown operation")
}

// Writes of records.

func (a *applier) putState(j *job) error {
	return a.w.put(StateKey(j.q.name, j.id), &queuewire.StateRecord{
		State: j.state, RunAtMs: j.runAt, Attempt: j.attempt, Failures: j.failures, Lost: j.lost,
		Token: j.token, Lease: j.lease, Worker: j.worker, ClaimedAtMs: j.claimedAt, DeadlineMs: j.deadline,
		FinishedAtMs: j.finishedAt, CancelRequested: j.cancelReq, HasOutput: j.hasOut, AvailableAtMs: j.availAt,
	})
}

// updateOut changes a job's output record.
func (a *applier) updateOut(j *job, fn func(*queuewire.OutputRecord)) error {
	var rec queuewire.OutputRecord
	if j.hasOut {
		v, err := a.w.get(OutKey(j.q.name, j.id))
		if err != nil {
			return err
		}
		if err := proto.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode output of job %d: %w", j.id, err)
		}
	}
	fn(&rec)
	j.hasOut = true
	return a.w.put(OutKey(j.q.name, j.id), &rec)
}

func truncateError(s string) string {
	if len(s) <= MaxErrorBytes {
		return s
	}
	s = s[:MaxErrorBytes]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Candidates.

// insertCand makes j a candidate of claims; now (noTime: unknown) says
// which heap it starts in.
func (q *queue) insertCand(j *job, now int64) {
	if now != noTime && j.runAt <= now {
		q.ready.push(j)
		q.pushAge(j)
		return
	}
	q.sched.push(j)
}

// pushAge adds a ready candidate to age, keeping ageMaxRunAt above its
// run time.
func (q *queue) pushAge(j *job) {
	q.age.push(j)
	q.ageMaxRunAt = max(q.ageMaxRunAt, j.runAt)
}

func (q *queue) removeCand(j *job) {
	q.ready.remove(j)
	q.age.remove(j)
	q.sched.remove(j)
	if j.grp != nil && j.grp.cand == j {
		j.grp.cand = nil
	}
}

// popCandidate takes the first candidate due at now; the ones found in
// ready but not due (set aside in *stash) go back to sched afterwards.
func (q *queue) popCandidate(now int64, stash *[]*job) *job {
	for {
		t := q.sched.top()
		if t == nil || t.runAt > now {
			break
		}
		q.sched.pop()
		q.ready.push(t)
		q.pushAge(t)
	}
	for {
		j := q.ready.pop()
		if j == nil {
			return nil
		}
		q.age.remove(j)
		if j.runAt > now {
			*stash = append(*stash, j)
			continue
		}
		return j
	}
}

// refresh recomputes the candidate group g offers: its first pending job,
// if it runs fewer jobs than the group limit and that job is not waiting
// for dependencies (a group runs in push order: a job that cannot run
// holds back the ones after it).
func (a *applier) refresh(q *queue, g *group, now int64) {
	if g.cand != nil {
		q.removeCand(g.cand)
	}
	if g.running >= q.groupLimit() {
		return
	}
	for _, j := range g.jobs {
		if j.state != queuepb.State_PENDING {
			continue
		}
		if j.unmet == 0 {
			g.cand = j
			q.insertCand(j, now)
		}
		return
	}
}

// eligible makes a pending job whose dependencies completed a candidate
// (through its group, if it has one), or cold if it may be and is due
// after its queue's horizon (which it first advances if it fell behind).
func (a *applier) eligible(j *job, now int64) error {
	q := j.q
	if j.grp != nil {
		a.refresh(q, j.grp, now)
		return nil
	}
	if mayBeCold(j) && j.runAt > q.hotUntil {
		if err := a.advance(q); err != nil {
			return err
		}
		if j.runAt > q.hotUntil {
			q.freeze(j)
			return nil
		}
	}
	q.insertCand(j, now)
	return nil
}

func (g *group) insert(j *job) {
	i, _ := slices.BinarySearchFunc(g.jobs, j.id, func(x *job, id uint64) int { return cmp.Compare(x.id, id) })
	g.jobs = slices.Insert(g.jobs, i, j)
}

func (g *group) drop(j *job) {
	if i := slices.Index(g.jobs, j); i >= 0 {
		g.jobs = slices.Delete(g.jobs, i, i+1)
	}
}

// groupFor returns q's group name, creating it.
func (q *queue) groupFor(name string) *group {
	g := q.groups[name]
	if g == nil {
		g = &group{name: name}
		q.groups[name] = g
	}
	return g
}

// Dispatch: jobs go to workers with room.

func (a *applier) dispatch(q *queue) error {
	if q.paused() || q.roomy.Len() == 0 || a.now == 0 {
		return nil
	}
	var stash []*job
	defer func() {
		for _, j := range stash {
			q.sched.push(j)
		}
	}()
	for q.roomy.Len() > 0 {
		if mr := q.maxRunning(); mr > 0 && q.running >= mr {
			break
		}
		j := q.popCandidate(a.now, &stash)
		if j == nil {
			break
		}
		if err := a.assign(q, j, q.roomy.top()); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) assign(q *queue, j *job, wk *worker) error {
	q.removeCand(j)
	q.count(j, j.state, queuepb.State_RUNNING)
	j.state = queuepb.State_RUNNING
	j.attempt++
	j.token = a.w.rev()
	j.lease, j.worker = wk.lease, wk.name
	j.claimedAt = a.now
	timeout := j.timeoutMs
	if timeout <= 0 {
		timeout = q.defaultTimeout()
	}
	j.deadline = a.now + timeout
	q.deadlines.push(j)
	wk.running++
	if wk.hasRoom() {
		q.roomy.fix(wk)
	} else {
		q.roomy.remove(wk)
	}
	a.m.leaseAddLocked(j)
	if g := j.grp; g != nil {
		g.running++
		g.lastServed = a.now
		if err := a.w.put(groupKey(q.name, g.name), &queuewire.GroupRecord{LastServedMs: g.lastServed}); err != nil {
			return err
		}
		a.refresh(q, g, a.now)
	}
	a.eff.Claimed = append(a.eff.Claimed, Claim{
		Queue: q.name, Worker: wk.name, Lease: wk.lease, ID: j.id, Token: j.token, Attempt: j.attempt,
		AvailableAt: j.availAt, ClaimedAt: a.now, Deadline: j.deadline,
	})
	a.eff.outcome(q.name).Claimed++
	return a.putState(j)
}

func (q *queue) defaultTimeout() int64 {
	if q.cfg != nil && q.cfg.DefaultTimeoutMs > 0 {
		return q.cfg.DefaultTimeoutMs
	}
	return DefaultTimeoutMs
}

// unassign ends j's claim: its worker, lease and group no longer count it.
func (a *applier) unassign(q *queue, j *job) {
	q.deadlines.remove(j)
	a.m.leaseRemoveLocked(j)
	if wk := q.workers[j.worker]; wk != nil && wk.lease == j.lease {
		wk.running--
		switch {
		case !wk.hasRoom():
		case q.roomy.contains(wk):
			q.roomy.fix(wk)
		default:
			q.roomy.push(wk)
		}
	}
	if g := j.grp; g != nil {
		g.running--
	}
}

// toPending makes j pending again, due at runAt (its claim, if any, ended).
func (a *applier) toPending(q *queue, j *job, runAt, now int64) error {
	q.count(j, j.state, queuepb.State_PENDING)
	j.state = queuepb.State_PENDING
	j.runAt = runAt
	j.availAt = runAt
	j.cancelReq = false
	if j.unmet > 0 {
		q.waiting++
	} else if err := a.eligible(j, now); err != nil {
		return err
	}
	return a.putState(j)
}

// end moves j to a final state at time now.
func (a *applier) end(q *queue, j *job, st queuepb.State, now int64) error {
	switch j.state {
	case queuepb.State_RUNNING:
		a.unassign(q, j)
	case queuepb.State_PENDING:
		q.removeCand(j)
		if j.unmet > 0 {
			q.waiting--
		}
	}
	q.count(j, j.state, st)
	j.state = st
	j.finishedAt = now
	j.cancelReq = false
	j.unmet = 0
	if g := j.grp; g != nil {
		g.drop(j)
		if len(g.jobs) == 0 {
			if g.cand != nil {
				q.removeCand(g.cand)
			}
			delete(q.groups, g.name)
			a.w.del(groupKey(q.name, g.name))
		} else {
			a.refresh(q, g, now)
		}
	}
	o := a.eff.outcome(q.name)
	switch st {
	case queuepb.State_COMPLETED:
		o.Completed++
	case queuepb.State_DEAD:
		o.Dead++
	case queuepb.State_CANCELLED:
		o.Cancels++
	}
	a.eff.Finished = append(a.eff.Finished, Finished{Queue: q.name, ID: j.id, State: st})
	deps := j.dependents
	j.dependents = nil
	for _, d := range deps {
		if d.state != queuepb.State_PENDING || d.unmet == 0 {
			continue
		}
		if st == queuepb.State_COMPLETED {
			d.unmet--
			if d.unmet == 0 {
				q.waiting--
				if err := a.eligible(d, now); err != nil {
					return err
				}
			}
			continue
		}
		if err := a.updateOut(d, func(r *queuewire.OutputRecord) {
			r.LastError = fmt.Sprintf("dependency %d ended %s", j.id, st)
		}); err != nil {
			return err
		}
		if err := a.end(q, d, queuepb.State_CANCELLED, now); err != nil {
			return err
		}
	}
	if q.retention(st) < 0 {
		a.deleteJob(q, j)
		return nil
	}
	q.finished(j).push(j)
	return a.putState(j)
}

// deleteJob removes a finished job and its keys.
func (a *applier) deleteJob(q *queue, j *job) {
	q.finished(j).remove(j)
	a.w.del(JobKey(q.name, j.id))
	a.w.del(StateKey(q.name, j.id))
	if j.hasOut {
		a.w.del(OutKey(q.name, j.id))
	}
	if j.idem != "" && q.idem[j.idem] == j.id {
		delete(q.idem, j.idem)
		a.w.del(idemKey(q.name, j.idem))
	}
	q.count(j, j.state, queuepb.State_STATE_UNSPECIFIED)
	delete(q.jobs, j.id)
}

// Operations.

func (a *applier) push(q *queue, req *queuepb.PushRequest) (proto.Message, error) {
	if len(req.Jobs) == 0 {
		return nil, invalid("push without jobs")
	}
	if len(req.Jobs) > MaxJobsPerPush {
		return nil, invalid("at most %d jobs per push", MaxJobsPerPush)
	}
	if a.env.NoSpace {
		return nil, rpctypes.ErrGRPCNoSpace
	}
	for _, s := range req.Jobs {
		if err := CheckSpec(s); err != nil {
			return nil, err
		}
		for _, d := range s.DependsOn {
			dj := q.jobs[d]
			if dj == nil {
				if q.cold.has(d) {
					continue // pending
				}
				return nil, status.Errorf(codes.NotFound, "queue: dependency %d not found in queue %s", d, q.name)
			}
			if dj.state == queuepb.State_DEAD || dj.state == queuepb.State_CANCELLED {
				return nil, status.Errorf(codes.FailedPrecondition, "queue: dependency %d is %s", d, dj.state)
			}
		}
	}
	if err := checkKVOps(req.Compares, req.Puts); err != nil {
		return nil, err
	}
	if err := a.kvOps(req.Compares, req.Puts); err != nil {
		return nil, err
	}
	if !a.w.room(len(req.Jobs)) {
		if err := a.w.flush(); err != nil {
			return nil, err
		}
	}
	a.writePuts(req.Puts)
	resp := &queuepb.PushResponse{Ids: make([]uint64, len(req.Jobs)), Duplicate: make([]bool, len(req.Jobs))}
	o := a.eff.outcome(q.name)
	for i, s := range req.Jobs {
		if s.IdempotencyKey != "" {
			if id, ok := q.idem[s.IdempotencyKey]; ok {
				resp.Ids[i], resp.Duplicate[i] = id, true
				continue
			}
		}
		j, err := a.newJobFrom(q, a.w.nextID(), s, a.now)
		if err != nil {
			return nil, err
		}
		resp.Ids[i] = j.id
		o.Pushed++
	}
	return resp, nil
}

// newJobFrom creates a pending job from its spec, at time now.
func (a *applier) newJobFrom(q *queue, id uint64, s *queuepb.JobSpec, now int64) (*job, error) {
	j := newJob(q, id)
	j.prio = s.Priority
	j.runAt = s.RunAtMs
	if s.DelayMs > 0 {
		j.runAt = now + s.DelayMs
	}
	if j.runAt == 0 {
		j.runAt = now
	}
	j.availAt = max(j.runAt, now)
	j.createdAt = now
	j.maxAttempts = s.MaxAttempts
	j.retry = s.Retry
	j.timeoutMs = s.TimeoutMs
	j.idem = s.IdempotencyKey
	j.deps = s.DependsOn
	j.state = queuepb.State_PENDING
	q.count(j, queuepb.State_STATE_UNSPECIFIED, queuepb.State_PENDING)
	q.jobs[id] = j
	if j.idem != "" {
		q.idem[j.idem] = id
		a.w.putRaw(idemKey(q.name, j.idem), []byte(strconv.FormatUint(id, 10)), 0)
	}
	if err := a.w.put(JobKey(q.name, id), &queuewire.SpecRecord{Spec: s, CreatedAtMs: now}); err != nil {
		return nil, err
	}
	if s.Group != "" {
		j.grp = q.groupFor(s.Group)
		j.grp.insert(j)
	}
	for _, d := range s.DependsOn {
		dj := q.jobs[d]
		if dj == nil {
			if q.cold.has(d) {
				j.unmet++
				q.cold.addDependent(d, j)
			}
			continue
		}
		if dj.state == queuepb.State_COMPLETED {
			continue
		}
		j.unmet++
		dj.dependents = append(dj.dependents, j)
	}
	if j.unmet > 0 {
		q.waiting++
	} else if err := a.eligible(j, now); err != nil {
		return nil, err
	}
	return j, a.putState(j)
}

func (a *applier) attach(q *queue, at *queuewire.Attach) error {
	if err := CheckName("worker", at.Worker); err != nil {
		return err
	}
	if at.Capacity < 0 || at.Capacity > MaxCapacity {
		return invalid("capacity must be from 0 to %d", MaxCapacity)
	}
	ok, err := a.env.Leases.Exists(at.Lease)
	if err != nil {
		return fmt.Errorf("look up lease %x: %w", at.Lease, err)
	}
	if !ok {
		return rpctypes.ErrGRPCLeaseNotFound
	}
	wk := q.workers[at.Worker]
	if wk == nil {
		wk = &worker{name: at.Worker, idx: -1}
		q.workers[at.Worker] = wk
	}
	if wk.lease != at.Lease {
		a.m.leaseWorkerRemoveLocked(wk)
		wk.lease = at.Lease
		wk.running = 0
		for _, j := range q.deadlines.items {
			if j.worker == wk.name && j.lease == wk.lease {
				wk.running++
			}
		}
		a.m.leaseWorkerAddLocked(q, wk)
	}
	wk.capacity, wk.stream = at.Capacity, at.Stream
	switch {
	case !wk.hasRoom():
		q.roomy.remove(wk)
	case q.roomy.contains(wk):
		q.roomy.fix(wk)
	default:
		q.roomy.push(wk)
	}
	return a.w.put(workerKey(q.name, wk.name), &queuewire.WorkerRecord{Lease: wk.lease, Capacity: wk.capacity, Stream: wk.stream})
}

func (a *applier) detach(q *queue, d *queuewire.Detach) error {
	wk := q.workers[d.Worker]
	if wk == nil || wk.stream != d.Stream {
		return nil // attached since by another stream
	}
	wk.capacity = 0
	q.roomy.remove(wk)
	if wk.running == 0 {
		a.dropWorker(q, wk)
		return nil
	}
	return a.w.put(workerKey(q.name, wk.name), &queuewire.WorkerRecord{Lease: wk.lease, Capacity: 0, Stream: wk.stream})
}

// dropWorker forgets a worker.
func (a *applier) dropWorker(q *queue, wk *worker) {
	q.roomy.remove(wk)
	a.m.leaseWorkerRemoveLocked(wk)
	delete(q.workers, wk.name)
	a.w.del(workerKey(q.name, wk.name))
}

// runningJob returns job id of q if it runs under token.
func (a *applier) runningJob(q *queue, id uint64, token int64) (*job, error) {
	j := q.jobs[id]
	if j == nil {
		if !q.cold.has(id) {
			return nil, errNotFound(q.name, id)
		}
		// Pending: refused as it is when it is in memory.
		st, err := a.coldState(q, id)
		if err != nil {
			return nil, err
		}
		j = &job{id: id, token: st.Token, state: st.State}
	}
	if j.token != token {
		return nil, status.Errorf(codes.FailedPrecondition, "%s %d: job %d of queue %s was claimed again since (token %d)", stalePrefix, token, id, q.name, j.token)
	}
	if j.state != queuepb.State_RUNNING {
		return nil, status.Errorf(codes.FailedPrecondition, "%s %d: job %d of queue %s %s (it is %s)", stalePrefix, token, id, q.name, notRunningInfix, j.state)
	}
	return j, nil
}

func (a *applier) complete(q *queue, id uint64, token int64, result []byte, cmps []*queuepb.Compare, puts []*queuepb.KeyValuePut) error {
	if len(result) > MaxResultBytes {
		return invalid("a result may hold at most %d bytes", MaxResultBytes)
	}
	j, err := a.runningJob(q, id, token)
	if err != nil {
		return err
	}
	if err := checkKVOps(cmps, puts); err != nil {
		return err
	}
	if err := a.kvOps(cmps, puts); err != nil {
		return err
	}
	a.writePuts(puts)
	if len(result) > 0 || j.hasOut {
		if err := a.updateOut(j, func(r *queuewire.OutputRecord) { r.Result = result }); err != nil {
			return err
		}
	}
	return a.end(q, j, queuepb.State_COMPLETED, a.now)
}

func (a *applier) fail(q *queue, id uint64, token int64, msg string, permanent bool, retryAfter int64) (proto.Message, error) {
	if retryAfter < 0 {
		return nil, invalid("retry after is negative")
	}
	j, err := a.runningJob(q, id, token)
	if err != nil {
		return nil, err
	}
	return a.failJob(q, j, msg, permanent, retryAfter)
}

// failJob ends a running attempt as failed: the job is retried, or dead.
func (a *applier) failJob(q *queue, j *job, msg string, permanent bool, retryAfter int64) (proto.Message, error) {
	j.failures++
	a.eff.outcome(q.name).Failed++
	if msg == "" {
		msg = "failed"
	}
	if err := a.updateOut(j, func(r *queuewire.OutputRecord) { r.LastError = truncateError(msg) }); err != nil {
		return nil, err
	}
	maxAttempts := j.maxAttempts
	if maxAttempts <= 0 {
		maxAttempts = q.defaultMaxAttempts()
	}
	switch {
	case j.cancelReq:
		return &queuepb.FailResponse{State: queuepb.State_CANCELLED}, a.end(q, j, queuepb.State_CANCELLED, a.now)
	case permanent || j.failures >= maxAttempts:
		return &queuepb.FailResponse{State: queuepb.State_DEAD}, a.end(q, j, queuepb.State_DEAD, a.now)
	}
	wait := retryAfter
	if wait == 0 {
		p := j.retry
		if p == nil && q.cfg != nil {
			p = q.cfg.DefaultRetry
		}
		wait = backoff(p, j.id, j.failures)
	}
	a.unassign(q, j)
	if err := a.toPending(q, j, a.now+wait, a.now); err != nil {
		return nil, err
	}
	return &queuepb.FailResponse{State: queuepb.State_PENDING, RunAtMs: j.runAt}, nil
}

func (q *queue) defaultMaxAttempts() int32 {
	if q.cfg != nil && q.cfg.DefaultMaxAttempts > 0 {
		return q.cfg.DefaultMaxAttempts
	}
	return DefaultMaxAttempts
}

func (a *applier) extend(q *queue, req *queuepb.ExtendRequest) (proto.Message, error) {
	if req.TimeoutMs < 0 {
		return nil, invalid("timeout is negative")
	}
	j, err := a.runningJob(q, req.Id, req.Token)
	if err != nil {
		return nil, err
	}
	t := req.TimeoutMs
	if t == 0 {
		if t = j.timeoutMs; t <= 0 {
			t = q.defaultTimeout()
		}
	}
	j.deadline = a.now + t
	q.deadlines.fix(j)
	return &queuepb.ExtendResponse{DeadlineMs: j.deadline}, a.putState(j)
}

func (a *applier) progress(q *queue, req *queuepb.ProgressRequest) error {
	if len(req.Progress) > MaxResultBytes {
		return invalid("progress may hold at most %d bytes", MaxResultBytes)
	}
	j, err := a.runningJob(q, req.Id, req.Token)
	if err != nil {
		return err
	}
	had := j.hasOut
	if err := a.updateOut(j, func(r *queuewire.OutputRecord) { r.Progress = req.Progress }); err != nil {
		return err
	}
	if !had {
		return a.putState(j)
	}
	return nil
}

func (a *applier) cancel(q *queue, id uint64) (proto.Message, error) {
	j := q.jobs[id]
	if j == nil && q.cold.has(id) {
		var err error
		if j, err = a.thaw(q, id); err != nil {
			return nil, err
		}
	}
	if j == nil {
		return nil, errNotFound(q.name, id)
	}
	switch j.state {
	case queuepb.State_PENDING:
		if err := a.updateOut(j, func(r *queuewire.OutputRecord) { r.LastError = "cancelled" }); err != nil {
			return nil, err
		}
		return &queuepb.CancelResponse{State: queuepb.State_CANCELLED}, a.end(q, j, queuepb.State_CANCELLED, a.now)
	case queuepb.State_RUNNING:
		if !j.cancelReq {
			j.cancelReq = true
			a.eff.Revoked = append(a.eff.Revoked, Revocation{Queue: q.name, Worker: j.worker, Lease: j.lease, ID: j.id, Token: j.token, Reason: "cancelled"})
			if err := a.putState(j); err != nil {
				return nil, err
			}
		}
		return &queuepb.CancelResponse{State: queuepb.State_RUNNING}, nil
	}
	return nil, status.Errorf(codes.FailedPrecondition, "queue: job %d of queue %s is already %s", id, q.name, j.state)
}

func (a *applier) configure(q *queue, req *queuepb.ConfigureRequest) (proto.Message, error) {
	c := proto.Clone(q.config()).(*queuepb.QueueConfig)
	if req.Paused != nil {
		c.Paused = *req.Paused
	}
	if req.MaxRunning != nil {
		c.MaxRunning = *req.MaxRunning
	}
	if req.GroupMaxRunning != nil {
		c.GroupMaxRunning = *req.GroupMaxRunning
	}
	if req.CompletedRetentionMs != nil {
		c.CompletedRetentionMs = *req.CompletedRetentionMs
	}
	if req.DeadRetentionMs != nil {
		c.DeadRetentionMs = *req.DeadRetentionMs
	}
	if req.DefaultMaxAttempts != nil {
		c.DefaultMaxAttempts = *req.DefaultMaxAttempts
	}
	if req.DefaultRetry != nil {
		if err := checkRetry(req.DefaultRetry); err != nil {
			return nil, err
		}
		c.DefaultRetry = req.DefaultRetry
	}
	if req.DefaultTimeoutMs != nil {
		c.DefaultTimeoutMs = *req.DefaultTimeoutMs
	}
	if req.MaxLost != nil {
		c.MaxLost = *req.MaxLost
	}
	if c.MaxRunning < 0 || c.GroupMaxRunning < 0 || c.DefaultMaxAttempts < 0 || c.DefaultTimeoutMs < 0 || c.MaxLost < 0 {
		return nil, invalid("limits, attempts and timeouts must not be negative")
	}
	oldLimit := q.groupLimit()
	q.cfg = c
	if err := a.w.put(ConfigKey(q.name), c); err != nil {
		return nil, err
	}
	if q.groupLimit() != oldLimit {
		for _, name := range sortedKeys(q.groups) {
			a.refresh(q, q.groups[name], a.now)
		}
	}
	return &queuepb.ConfigureResponse{Config: proto.Clone(c).(*queuepb.QueueConfig)}, nil // the caller's, as for schedules
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// finishedJobs returns q's jobs in state st, by ID.
func (q *queue) jobsIn(st queuepb.State) []*job {
	var js []*job
	for _, j := range q.jobs {
		if j.state == st {
			js = append(js, j)
		}
	}
	slices.SortFunc(js, func(x, y *job) int { return cmp.Compare(x.id, y.id) })
	return js
}

func (a *applier) redrive(q *queue, req *queuepb.RedriveRequest) (proto.Message, error) {
	limit := int(req.Rate)
	if limit <= 0 {
		limit = redriveDefault
	}
	var js []*job
	if len(req.Ids) > 0 {
		for _, id := range req.Ids {
			if j := q.jobs[id]; j != nil && j.state == queuepb.State_DEAD {
				js = append(js, j)
			}
		}
	} else {
		js = q.jobsIn(queuepb.State_DEAD)
	}
	n := 0
	for _, j := range js {
		if n == limit {
			break
		}
		if j.state != queuepb.State_DEAD {
			continue // listed twice
		}
		q.gone.remove(j)
		j.failures, j.lost, j.finishedAt = 0, 0, 0
		j.unmet = 0
		if g := j.grp; g != nil {
			// A group whose jobs all finished was forgotten: take it up.
			g = q.groupFor(g.name)
			j.grp = g
			g.insert(j)
		}
		if err := a.toPending(q, j, a.now, a.now); err != nil {
			return nil, err
		}
		n++
	}
	return &queuepb.RedriveResponse{Redriven: int64(n)}, nil
}

func (a *applier) purge(q *queue, req *queuepb.PurgeRequest) (proto.Message, error) {
	n := 0
	if len(req.Ids) > 0 {
		if len(req.Ids) > purgeBatch {
			return nil, invalid("at most %d jobs per purge", purgeBatch)
		}
		for _, id := range req.Ids {
			j := q.jobs[id]
			if j == nil && q.cold.has(id) {
				j = &job{state: queuepb.State_PENDING}
			}
			if j == nil {
				continue
			}
			if !j.terminal() {
				return nil, status.Errorf(codes.FailedPrecondition, "queue: job %d of queue %s is %s: only finished jobs are purged", id, q.name, j.state)
			}
		}
		for _, id := range req.Ids {
			if j := q.jobs[id]; j != nil {
				a.deleteJob(q, j)
				n++
			}
		}
	} else {
		for _, j := range q.jobsIn(queuepb.State_DEAD) {
			if n == purgeBatch {
				break
			}
			a.deleteJob(q, j)
			n++
		}
	}
	return &queuepb.PurgeResponse{Purged: int64(n)}, nil
}

func (a *applier) putSchedule(q *queue, s *queuepb.Schedule) (proto.Message, error) {
	if err := CheckName("schedule", s.GetName()); err != nil {
		return nil, err
	}
	if s.Cron == "" {
		return nil, invalid("schedule %s has no cron expression", s.Name)
	}
	if err := CheckSpec(s.Job); err != nil {
		return nil, err
	}
	rec := proto.Clone(s).(*queuepb.Schedule)
	rec.NextMs = 0
	if old := q.schedules[s.Name]; old != nil {
		rec.CreatedAtMs = old.rec.CreatedAtMs
		rec.LastFiredMs = max(old.rec.LastFiredMs, a.now)
	} else {
		rec.CreatedAtMs = a.now
		rec.LastFiredMs = a.now
	}
	q.schedules[s.Name] = &schedule{rec: rec}
	if err := a.w.put(cronKey(q.name, s.Name), &queuewire.ScheduleRecord{Schedule: rec}); err != nil {
		return nil, err
	}
	// The answer is the caller's to change (the node fills in the next
	// firing); rec is replicated state, read by the leader loop.
	return &queuepb.PutScheduleResponse{Schedule: proto.Clone(rec).(*queuepb.Schedule)}, nil
}

func (a *applier) deleteSchedule(q *queue, name string) (proto.Message, error) {
	if q.schedules[name] == nil {
		return &queuepb.DeleteScheduleResponse{}, nil
	}
	delete(q.schedules, name)
	a.w.del(cronKey(q.name, name))
	return &queuepb.DeleteScheduleResponse{Deleted: true}, nil
}

// release ends the claim of a job whose lease ended: it is pending again
// at once (or dead, if it was lost too often), the attempt counted as
// lost.
func (a *applier) release(j *job) error {
	q := j.q
	if err := a.touch(q); err != nil {
		return err
	}
	if j.state != queuepb.State_RUNNING {
		return nil
	}
	j.lost++
	a.eff.Revoked = append(a.eff.Revoked, Revocation{Queue: q.name, Worker: j.worker, Lease: j.lease, ID: j.id, Token: j.token, Reason: "lease ended"})
	a.eff.Dispatch = true
	// The revocation carries no time: the claim's stands in for it.
	now := j.claimedAt
	switch {
	case j.cancelReq:
		return a.end(q, j, queuepb.State_CANCELLED, now)
	case j.lost >= q.maxLost():
		if err := a.updateOut(j, func(r *queuewire.OutputRecord) {
			r.LastError = fmt.Sprintf("lost %d times: the workers' leases ended while they ran it", j.lost)
		}); err != nil {
			return err
		}
		return a.end(q, j, queuepb.State_DEAD, now)
	}
	a.unassign(q, j)
	return a.toPending(q, j, j.runAt, noTime)
}

// tick applies the leader's time-driven work.
func (a *applier) tick(t *queuewire.Tick) error {
	for _, name := range t.Dispatch {
		if q := a.m.mu.queues[name]; q != nil {
			if err := a.touch(q); err != nil {
				return err
			}
		}
	}
	for _, r := range t.Expire {
		q := a.m.mu.queues[r.Queue]
		if q == nil {
			continue
		}
		j := q.jobs[r.Id]
		if j == nil || j.state != queuepb.State_RUNNING || j.token != r.Token || j.deadline > a.now {
			continue
		}
		if err := a.touch(q); err != nil {
			return err
		}
		a.eff.Revoked = append(a.eff.Revoked, Revocation{Queue: q.name, Worker: j.worker, Lease: j.lease, ID: j.id, Token: j.token, Reason: "timed out"})
		if _, err := a.failJob(q, j, fmt.Sprintf("timed out after %d ms", j.deadline-j.claimedAt), false, 0); err != nil {
			return err
		}
	}
	for _, r := range t.Sweep {
		q := a.m.mu.queues[r.Queue]
		if q == nil {
			continue
		}
		j := q.jobs[r.Id]
		if j == nil || !j.terminal() || q.expireAt(j) > a.now {
			continue
		}
		if err := a.touch(q); err != nil {
			return err
		}
		a.deleteJob(q, j)
	}
	for _, f := range t.Fire {
		q := a.m.mu.queues[f.Queue]
		if q == nil {
			continue
		}
		s := q.schedules[f.Schedule]
		if s == nil {
			continue
		}
		if err := a.touch(q); err != nil {
			return err
		}
		for _, at := range f.TimesMs {
			if err := a.fire(q, s, at); err != nil {
				return err
			}
		}
	}
	return nil
}

// fire pushes the job of schedule s's firing at time at, once: a firing at
// or before the last one is ignored, and the job's idempotency key names
// the firing.
func (a *applier) fire(q *queue, s *schedule, at int64) error {
	if at <= s.rec.LastFiredMs || s.rec.Paused {
		return nil
	}
	s.rec.LastFiredMs = at
	if err := a.w.put(cronKey(q.name, s.rec.Name), &queuewire.ScheduleRecord{Schedule: s.rec}); err != nil {
		return err
	}
	if a.env.NoSpace {
		return nil
	}
	spec := proto.Clone(s.rec.Job).(*queuepb.JobSpec)
	if spec == nil {
		spec = &queuepb.JobSpec{}
	}
	spec.IdempotencyKey = FiringKey(s.rec.Name, at)
	spec.RunAtMs, spec.DelayMs = 0, 0
	if _, dup := q.idem[spec.IdempotencyKey]; dup {
		return nil
	}
	var live []uint64
	for _, d := range spec.DependsOn {
		if dj := q.jobs[d]; (dj != nil && dj.state != queuepb.State_DEAD && dj.state != queuepb.State_CANCELLED) || q.cold.has(d) {
			live = append(live, d)
		}
	}
	spec.DependsOn = live
	if !a.w.room(1) {
		if err := a.w.flush(); err != nil {
			return err
		}
	}
	if _, err := a.newJobFrom(q, a.w.nextID(), spec, a.now); err != nil {
		return err
	}
	a.eff.outcome(q.name).Pushed++
	return nil
}

// FiringKey is the idempotency key of the job of schedule name's firing
// at time at (Unix milliseconds).
func FiringKey(name string, at int64) string {
	return "cron:" + name + ":" + strconv.FormatInt(at, 10)
}
