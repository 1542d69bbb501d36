package chaos

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testbin"
	"github.com/synod-io/synod/internal/testcluster"
)

// cluster is what the nemesis and the checks need of a cluster under test.
type cluster interface {
	size() int
	name(i int) string
	endpoint(i int) string
	// leader returns the node that believes it leads (the one of the highest
	// term if several do), or -1.
	leader(ctx context.Context) int
	isolate(i int)
	oneWay(from, to int)
	split(minority []int)
	heal()
	crash(i int) error
	restart(i int) error
	running(i int) bool
	// setLinkFaults applies faults to every link; it reports false if the
	// cluster cannot inject them.
	setLinkFaults(f testcluster.LinkFaults) bool
	// pause freezes a node; it reports false if the cluster cannot.
	pause(i int) (bool, error)
	resume(i int) error
	// logs returns where the nodes' logs are, if anywhere.
	logs() string
}

// inProcessTurn is held by the test of this package whose in-process
// cluster runs (see takeInProcessTurn).
var inProcessTurn = make(chan struct{}, 1)

// takeInProcessTurn waits until no other test of this package runs an
// in-process cluster, and holds the turn until t ends (after the cluster it
// then starts is shut down: cleanups run last first). The race-built nodes
// and clients of an in-process cluster under load take all the CPU they
// get, and two at once would each do far fewer operations in their fixed
// durations, elect leaders late and time out. A cluster of synod processes
// (built without the race detector) runs alongside; so does a test that
// does not call t.Parallel, alone by then.
func takeInProcessTurn(t *testing.T) {
	t.Helper()
	inProcessTurn <- struct{}{}
	t.Cleanup(func() { <-inProcessTurn })
}

// newInProcess starts an in-process cluster. With SYNOD_TEST_PRESPLIT=1
// (testbin.Presplit) its nodes bootstrap the data ranges of a pre-split
// store, fewer than the process clusters' (testbin.PresplitInProcessKeys:
// every replica of every node runs in this race-built process), with the
// process clusters' size limit (testbin.PresplitRangeMaxBytes).
func newInProcess(t *testing.T, opts testcluster.Options) *testcluster.Cluster {
	t.Helper()
	if testbin.Presplit() {
		configure := opts.Configure
		opts.Configure = func(i int, cfg *server.Config) {
			cfg.DataRangeSplits = testbin.PresplitInProcessKeys()
			cfg.RangeMaxBytes = testbin.PresplitRangeMaxBytes
			if configure != nil {
				configure(i, cfg)
			}
		}
	}
	return testcluster.New(t, opts)
}

// inProcess adapts a testcluster.
type inProcess struct{ c *testcluster.Cluster }

func (p inProcess) size() int             { return len(p.c.Nodes()) }
func (p inProcess) name(i int) string     { return p.c.Node(i).Name }
func (p inProcess) endpoint(i int) string { return p.c.Node(i).ClientAddr }
func (p inProcess) leader(context.Context) int {
	if n := p.c.SomeLeader(); n != nil {
		return n.Index
	}
	return -1
}
func (p inProcess) isolate(i int)       { p.c.Isolate(p.c.Node(i)) }
func (p inProcess) oneWay(from, to int) { p.c.OneWay(p.c.Node(from), p.c.Node(to)) }
func (p inProcess) split(minority []int) {
	var a, b []*testcluster.Node
	in := map[int]bool{}
	for _, i := range minority {
		in[i] = true
	}
	for _, n := range p.c.Nodes() {
		if in[n.Index] {
			a = append(a, n)
		} else {
			b = append(b, n)
		}
	}
	p.c.Split(a, b)
}
func (p inProcess) heal() { p.c.Heal() }
func (p inProcess) crash(i int) error {
	p.c.Node(i).Crash()
	return nil
}
func (p inProcess) restart(i int) error { return p.c.Node(i).Start() }
func (p inProcess) running(i int) bool  { return p.c.Node(i).Running() }
func (p inProcess) setLinkFaults(f testcluster.LinkFaults) bool {
	p.c.SetAllLinkFaults(f)
	return true
}
func (p inProcess) pause(int) (bool, error) { return false, nil }
func (p inProcess) resume(int) error        { return nil }
func (p inProcess) logs() string            { return "set SYNOD_TEST_LOG=debug to see node logs" }

// newClient returns an etcd client of one endpoint; the caller closes it.
func newClient(endpoint string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("client of %s: %w", endpoint, err)
	}
	return cli, nil
}

// waitServing waits until every node is running and a linearizable read
// through each of them succeeds.
func waitServing(ctx context.Context, c cluster) error {
	for i := range c.size() {
		if !c.running(i) {
			return fmt.Errorf("node %s is down", c.name(i))
		}
		cli, err := newClient(c.endpoint(i))
		if err != nil {
			return err
		}
		var lastErr error
		for {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			_, lastErr = cli.Get(rctx, "probe")
			cancel()
			if lastErr == nil || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		cli.Close()
		if lastErr != nil {
			return fmt.Errorf("node %s does not serve reads: %w", c.name(i), errors.Join(lastErr, ctx.Err()))
		}
	}
	return nil
}
