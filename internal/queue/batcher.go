package queue

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/queue/machine"
	"github.com/synod-io/synod/internal/queue/queuewire"
)

// Batching: the operations of every client and claim stream of a node go
// into shared Raft commands. A collector gathers them while proposers are
// busy; each free proposer takes what gathered (one command's worth) and
// proposes it, so that the operations arriving during one round trip
// share the next command.
const (
	// proposers is how many batch commands a node has in flight at once.
	proposers = 4
	// maxBatchOps bounds the operations of one command.
	maxBatchOps = 4096
	// opOverhead is a rough size of an operation beyond its payloads.
	opOverhead = 64
)

// pending is an operation waiting for its command.
type pending struct {
	op *queuewire.Op
	// fence is how the operation was authorized (hasFence: it went through
	// the auth interceptor); only operations checked alike share a command.
	fence    auth.Fence
	hasFence bool
	// push marks pushes, which alone count against the storage quota (so
	// that completions go on when it is reached).
	push bool
	size int
	done func(machine.OpResult)
}

func (p *pending) class() batchClass {
	return batchClass{fence: p.fence, hasFence: p.hasFence, push: p.push}
}

type batchClass struct {
	fence    auth.Fence
	hasFence bool
	push     bool
}

// batcher turns operations into batch commands.
type batcher struct {
	s       *Service
	in      chan *pending
	batches chan []*pending
	maxSize int
}

func newBatcher(s *Service, maxSize int) *batcher {
	return &batcher{s: s, in: make(chan *pending, 1024), batches: make(chan []*pending), maxSize: maxSize}
}

// errStopped answers operations submitted while the node stops.
var errStopped = status.Error(codes.Unavailable, "queue: the node is stopping")

// submit queues an operation; done is called once with its result.
func (b *batcher) submit(ctx context.Context, p *pending) {
	select {
	case b.in <- p:
	case <-ctx.Done():
		p.done(machine.OpResult{Err: status.FromContextError(ctx.Err()).Err()})
	case <-b.s.ctx.Done():
		p.done(machine.OpResult{Err: errStopped})
	}
}

// do submits an operation and waits for its result.
func (b *batcher) do(ctx context.Context, op *queuewire.Op) (proto.Message, error) {
	ch := make(chan machine.OpResult, 1)
	f, ok := auth.FenceFromContext(ctx)
	_, push := op.Op.(*queuewire.Op_Push)
	b.submit(ctx, &pending{op: op, fence: f, hasFence: ok, push: push, size: proto.Size(op) + opOverhead,
		done: func(r machine.OpResult) { ch <- r }})
	select {
	case r := <-ch:
		return r.Resp, r.Err
	case <-ctx.Done():
		// The operation may still apply: its outcome is unknown, as with
		// any write whose caller gave up.
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// collect gathers operations and hands them to free proposers.
func (b *batcher) collect(ctx context.Context) {
	var queue []*pending
	var t taker // the command the queue's head makes up
	for {
		var out chan []*pending
		var next []*pending
		if t.n > 0 {
			out, next = b.batches, queue[:t.n:t.n]
		}
		select {
		case p := <-b.in:
			queue = append(queue, p)
		drain:
			for len(queue) < 4*maxBatchOps {
				select {
				case p := <-b.in:
					queue = append(queue, p)
				default:
					break drain
				}
			}
			t.extend(queue, b.maxSize)
		case out <- next:
			// The proposer owns next's elements: move on past them.
			queue = queue[len(next):]
			t = taker{}
			t.extend(queue, b.maxSize)
		case <-ctx.Done():
			for _, p := range queue {
				p.done(machine.OpResult{Err: errStopped})
			}
			return
		}
	}
}

// taker tracks the first operations of a queue that fit one command: of
// the first one's class, within the size and count bounds.
type taker struct {
	n, size int
	full    bool
}

// extend takes more of queue, as far as they fit.
func (t *taker) extend(queue []*pending, maxSize int) {
	for !t.full && t.n < len(queue) {
		p := queue[t.n]
		if t.n == maxBatchOps || (t.n > 0 && (p.class() != queue[0].class() || t.size+p.size > maxSize)) {
			t.full = true
			return
		}
		t.size += p.size
		t.n++
	}
}

// propose proposes the batches it is handed, one at a time.
func (b *batcher) propose(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-b.batches:
			b.proposeBatch(ctx, batch)
		}
	}
}

func (b *batcher) proposeBatch(ctx context.Context, batch []*pending) {
	cmd := &queuewire.Batch{NowMs: b.s.now(), Ops: make([]*queuewire.Op, len(batch))}
	var cost int64
	for i, p := range batch {
		cmd.Ops[i] = p.op
		if p.push {
			cost += int64(p.size)
		}
	}
	fail := func(err error) {
		for _, p := range batch {
			p.done(machine.OpResult{Err: err})
		}
	}
	payload, err := proto.Marshal(cmd)
	if err != nil {
		fail(fmt.Errorf("encode queue batch: %w", err))
		return
	}
	pctx := ctx
	if c := batch[0].class(); c.hasFence {
		pctx = auth.WithFence(ctx, c.fence)
	}
	b.s.metrics.batchOps.Observe(float64(len(batch)))
	out, err := b.s.b.Propose(pctx, machine.KindBatch, payload, cost)
	if err != nil {
		fail(err)
		return
	}
	res, ok := out.(*machine.BatchResult)
	if !ok || len(res.Results) != len(batch) {
		fail(fmt.Errorf("queue batch returned %T", out))
		return
	}
	for i, p := range batch {
		p.done(res.Results[i])
	}
}
