package replica

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestLostLogIsAnErrorNotAPanic restarts a follower on an empty store,
// bootstrapped again as at the cluster's first start (its data dir was
// deleted): the leader's heartbeat commits entries the follower had
// acknowledged and no longer holds. Raft panics on it ("tocommit is out of
// range"); the replica refuses the message with ErrLogLost instead.
func TestLostLogIsAnErrorNotAPanic(t *testing.T) {
	nw := newNetwork(t, 3, Config{})
	nw.elect(1)
	nw.putKeys(1, 10)
	nw.stabilize()

	nw.stop(3)
	nw.fs[3] = vfs.NewCrashableMem()
	db := nw.openDB(3)
	b := db.NewBatch()
	if err := Bootstrap(b, testRange, nw.ids); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	b.Close()
	nw.start(3, db)

	for range 5 * nw.replicas[1].cfg.HeartbeatTicks {
		for _, id := range nw.ids {
			nw.replicas[id].Tick()
		}
		nw.ready()
		q := nw.queue
		nw.queue = nil
		for _, m := range q {
			err := nw.replicas[m.GetTo()].Step(m)
			if errors.Is(err, ErrLogLost) && m.GetTo() == 3 {
				return
			}
			if err != nil {
				t.Fatalf("step %s on %d: %v", m.GetType(), m.GetTo(), err)
			}
		}
	}
	t.Fatalf("follower restarted on an empty store: no heartbeat refused with %v", ErrLogLost)
}
