package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/synod-io/synod/internal/lincheck"
	"github.com/synod-io/synod/internal/testcluster"
)

// fakeCluster records the faults injected into it.
type fakeCluster struct {
	mu  sync.Mutex
	log []string
}

func (f *fakeCluster) note(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf(format, args...))
}

func (f *fakeCluster) size() int                  { return 5 }
func (f *fakeCluster) name(i int) string          { return fmt.Sprintf("n%d", i+1) }
func (f *fakeCluster) endpoint(int) string        { return "" }
func (f *fakeCluster) leader(context.Context) int { return 2 }
func (f *fakeCluster) isolate(i int)              { f.note("isolate %d", i) }
func (f *fakeCluster) oneWay(from, to int)        { f.note("oneway %d %d", from, to) }
func (f *fakeCluster) split(minority []int)       { f.note("split %v", minority) }
func (f *fakeCluster) heal()                      { f.note("heal") }
func (f *fakeCluster) crash(i int) error          { f.note("crash %d", i); return nil }
func (f *fakeCluster) restart(i int) error        { f.note("restart %d", i); return nil }
func (f *fakeCluster) running(int) bool           { return true }
func (f *fakeCluster) pause(i int) (bool, error)  { f.note("pause %d", i); return true, nil }
func (f *fakeCluster) resume(i int) error         { f.note("resume %d", i); return nil }
func (f *fakeCluster) logs() string               { return "" }
func (f *fakeCluster) setLinkFaults(lf testcluster.LinkFaults) bool {
	f.note("links %s", lf)
	return true
}

// schedule runs a nemesis with every fault kind on a fake cluster for two
// rounds and returns what it did.
func fakeSchedule(t *testing.T, seed int64) []string {
	t.Helper()
	f := &fakeCluster{}
	n := &nemesis{c: f, kinds: faultKinds, rng: stream(seed, streamNemesis), rec: lincheck.NewRecorder(),
		hold: [2]time.Duration{time.Microsecond, 10 * time.Microsecond}, quiet: [2]time.Duration{time.Microsecond, 10 * time.Microsecond},
		logf: func(string, ...any) {}, roundDone: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.run(ctx) }()
	select {
	case <-n.roundDone:
	case err := <-done:
		t.Fatalf("nemesis: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("nemesis: %v", err)
	}
	for _, k := range faultKinds {
		if n.injected[k.name] == 0 {
			t.Fatalf("round done but %s never injected", k.name)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// The round in progress when ctx ended may stop at any point.
	return f.log[:len(faultKinds)*2]
}

func TestScheduleIsAFunctionOfTheSeed(t *testing.T) {
	a, b, c := fakeSchedule(t, 42), fakeSchedule(t, 42), fakeSchedule(t, 43)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 42 twice: got\n%s\nand\n%s", strings.Join(a, "; "), strings.Join(b, "; "))
	}
	if slices.Equal(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same schedule: %s", strings.Join(a, "; "))
	}
}

func TestSoakScenarioIsAFunctionOfTheSeed(t *testing.T) {
	a, b := soakScenario(7, time.Minute), soakScenario(7, time.Minute)
	if a.String() != b.String() {
		t.Fatalf("seed 7 twice: got %s and %s", a, b)
	}
	for seed := range int64(50) {
		sc := soakScenario(seed, time.Minute)
		for _, name := range sc.faults {
			k, ok := faultKindNamed(name)
			if !ok || (sc.process && !k.process) || (!sc.process && !k.inProcess) {
				t.Fatalf("seed %d: fault %s is not available for %s", seed, name, sc)
			}
		}
	}
}

// echoServer answers every connection with what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	return l.Addr().String()
}

// roundTrip dials the proxy's listener for node to from ip and checks that
// bytes come back within a second.
func roundTrip(p *proxy, ip string, to int) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: time.Second}
	c, err := d.Dial("tcp", p.addr(to))
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return fmt.Errorf("got %q back, want ping", buf)
	}
	return nil
}

func TestProxyCutsLinks(t *testing.T) {
	targets := []string{echoServer(t), echoServer(t)}
	ips := []string{"127.0.0.21", "127.0.0.22"}
	p, err := newProxy(targets, ips)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if err := roundTrip(p, ips[0], 1); err != nil {
		t.Fatalf("healthy link n1->n2: %v", err)
	}
	// An open connection of the link is cut too.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ips[0])}}
	open, err := d.Dial("tcp", p.addr(1))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := open.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(open, buf); err != nil {
		t.Fatalf("open connection before the cut: %v", err)
	}
	p.cutLink(0, 1)
	if err := roundTrip(p, ips[0], 1); err == nil {
		t.Fatalf("cut link n1->n2: got a round trip, want a failure")
	}
	_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := open.Read(buf); err == nil {
		t.Fatalf("connection open across the cut: got data, want it closed")
	}
	if err := roundTrip(p, ips[1], 0); err != nil {
		t.Fatalf("reverse link n2->n1 of a one-way cut: %v", err)
	}
	if err := roundTrip(p, "127.0.0.23", 1); err == nil {
		t.Fatalf("connection from an unknown source: got a round trip, want it refused")
	}
	p.heal()
	if err := roundTrip(p, ips[0], 1); err != nil {
		t.Fatalf("healed link n1->n2: %v", err)
	}
	p.setDelay(50 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(p, ips[0], 1); err != nil {
		t.Fatalf("slow link: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("round trip over a link delayed 50ms each way: took %s, want at least 100ms", d)
	}
}
