package auth

import (
	"github.com/synod-io/synod/api/queuepb"
)

// QueuePermissionPrefix names the job queues in permissions: the
// permissions of queue q are those of the key QueuePermissionPrefix + q
// (a name only: the queue's data are reserved keys no role covers).
const QueuePermissionPrefix = "synod/queues/"

// checkQueue decides the job queue requests of a non-root user: read on
// the queue's key for reading jobs, read and write for pushing, claiming
// and finishing them (and for Cancel), plus what a push's or completion's
// KV compares (read) and puts (write) need. Configure, Redrive, Purge and
// the schedule changes are root's (they have no rule). handled is false
// for requests of other services.
func checkQueue(st *State, user string, req any) (ok, handled bool) {
	read := func(q string) bool { return st.Allowed(user, []byte(QueuePermissionPrefix+q), nil, Read) }
	rw := func(q string) bool {
		return q != "" && read(q) && st.Allowed(user, []byte(QueuePermissionPrefix+q), nil, Write)
	}
	kvOps := func(cmps []*queuepb.Compare, puts []*queuepb.KeyValuePut) bool {
		for _, c := range cmps {
			if !st.Allowed(user, c.Key, c.RangeEnd, Read) {
				return false
			}
		}
		for _, p := range puts {
			if !st.Allowed(user, p.Key, nil, Write) {
				return false
			}
		}
		return true
	}
	switch r := req.(type) {
	case *queuepb.PushRequest:
		return rw(r.Queue) && kvOps(r.Compares, r.Puts), true
	case *queuepb.ClaimRequest:
		// A stream's first request names its queue; the later ones may
		// leave it out (the stream serves that queue only).
		return r.Queue == "" && r.Worker == "" && r.Lease == 0 || rw(r.Queue), true
	case *queuepb.CompleteRequest:
		return rw(r.Queue) && kvOps(r.Compares, r.Puts), true
	case *queuepb.FailRequest:
		return rw(r.Queue), true
	case *queuepb.ExtendRequest:
		return rw(r.Queue), true
	case *queuepb.ProgressRequest:
		return rw(r.Queue), true
	case *queuepb.CancelRequest:
		return rw(r.Queue), true
	case *queuepb.GetRequest:
		return read(r.Queue), true
	case *queuepb.ListRequest:
		return read(r.Queue), true
	case *queuepb.WaitRequest:
		return read(r.Queue), true
	case *queuepb.StatsRequest:
		return read(r.Queue), true
	case *queuepb.ListSchedulesRequest:
		return read(r.Queue), true
	}
	return false, false
}
