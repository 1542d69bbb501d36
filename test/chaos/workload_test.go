package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/lincheck"
)

// workload is a set of concurrent etcd clients doing random operations on a
// few keys, each client talking to one node.
type workload struct {
	keys []string
	// opTimeout bounds one operation; a write that times out has an unknown
	// outcome.
	opTimeout time.Duration
	// think is the most a client waits between two operations.
	think time.Duration
}

// worker is one client of the workload.
type worker struct {
	w    *workload
	id   int
	node string
	cli  *clientv3.Client
	rng  *rand.Rand
	rec  *lincheck.Recorder
	seq  int
	last map[string]string // the value this client last saw per key ("" absent)
}

// run does operations until ctx ends.
func (wk *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		wk.step(ctx)
		if wk.w.think > 0 {
			sleep(ctx, time.Duration(wk.rng.Int64N(int64(wk.w.think))))
		}
	}
}

func (wk *worker) value() string {
	wk.seq++
	return fmt.Sprintf("c%d-%d", wk.id, wk.seq)
}

// step does one operation. The draws from rng do not depend on outcomes,
// except for the value a CAS expects (the last one this client saw).
func (wk *worker) step(parent context.Context) {
	key := wk.w.keys[wk.rng.IntN(len(wk.w.keys))]
	r := wk.rng.IntN(100)
	ctx, cancel := context.WithTimeout(parent, wk.w.opTimeout)
	defer cancel()
	switch {
	case r < 35:
		p := wk.rec.Invoke(wk.id, wk.node, lincheck.Input{Kind: lincheck.Get, Key: key})
		resp, err := wk.cli.Get(ctx, key)
		if err != nil {
			p.Failed()
			return
		}
		out := lincheck.Output{Revision: resp.Header.Revision}
		readInto(&out, resp.Kvs)
		p.Ok(out)
		wk.last[key] = out.Value
	case r < 65:
		v := wk.value()
		p := wk.rec.Invoke(wk.id, wk.node, lincheck.Input{Kind: lincheck.Put, Key: key, Value: v})
		resp, err := wk.cli.Put(ctx, key, v)
		if err != nil {
			p.Unknown(err)
			return
		}
		p.Ok(lincheck.Output{Revision: resp.Header.Revision})
		wk.last[key] = v
	case r < 85:
		v := wk.value()
		in := lincheck.Input{Kind: lincheck.CAS, Key: key, Value: v, Expect: wk.last[key], ExpectAbsent: wk.last[key] == ""}
		cmp := clientv3.Compare(clientv3.Value(key), "=", in.Expect)
		if in.ExpectAbsent {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		p := wk.rec.Invoke(wk.id, wk.node, in)
		resp, err := wk.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, v)).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			p.Unknown(err)
			return
		}
		out := lincheck.Output{Revision: resp.Header.Revision, Succeeded: resp.Succeeded}
		if resp.Succeeded {
			wk.last[key] = v
		} else if len(resp.Responses) == 1 && resp.Responses[0].GetResponseRange() != nil {
			readInto(&out, resp.Responses[0].GetResponseRange().Kvs)
			wk.last[key] = out.Value
		} else {
			// A failed CAS must carry the else branch's read.
			out.Err = fmt.Sprintf("failed txn without its get: %v", resp.Responses)
			out.Exists, out.Value = true, "<missing>"
		}
		p.Ok(out)
	default:
		p := wk.rec.Invoke(wk.id, wk.node, lincheck.Input{Kind: lincheck.Delete, Key: key})
		resp, err := wk.cli.Delete(ctx, key)
		if err != nil {
			p.Unknown(err)
			return
		}
		p.Ok(lincheck.Output{Revision: resp.Header.Revision, Deleted: resp.Deleted})
		wk.last[key] = ""
	}
}

func readInto(out *lincheck.Output, kvs []*mvccpb.KeyValue) {
	if len(kvs) == 1 {
		out.Exists, out.Value, out.ModRev = true, string(kvs[0].Value), kvs[0].ModRevision
	} else if len(kvs) > 1 {
		out.Exists, out.Value = true, fmt.Sprintf("<%d keys>", len(kvs))
	}
}
