package chaos

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var (
	seedFlag      = flag.Int64("seed", 0, "seed of the run (CI: overrides each scenario's; soak: the first round's)")
	durationFlag  = flag.Duration("duration", 0, "soak for this long in rounds of -round (0: the fixed CI scenarios)")
	roundFlag     = flag.Duration("round", time.Minute, "length of one soak round")
	outFlag       = flag.String("out", "", "directory for the files of failed runs (default: a new one in $TMPDIR)")
	knownBugsFlag = flag.Bool("known-bugs", false, "also run the reproductions of known, unfixed bugs (they fail until fixed; see knownbugs_test.go)")
)

// ciScenarios are the fixed seeds of the CI run: together they cover every
// fault kind, each scenario long enough for one round of its faults.
var ciScenarios = []scenario{
	{name: "partitions", nodes: 3, faults: []string{"isolate-leader", "partition", "oneway-leader-out", "oneway-leader-in"}, duration: 9 * time.Second, seed: 1},
	{name: "flaky-network", nodes: 3, faults: []string{"flaky", "slow", "flaky"}, duration: 7 * time.Second, seed: 2},
	{name: "crashes", nodes: 3, faults: []string{"crash", "crash-leader", "crash-all"}, duration: 8 * time.Second, seed: 3},
	{name: "five-nodes", nodes: 5, faults: []string{"partition", "isolate-leader", "flaky", "crash-leader"}, duration: 9 * time.Second, seed: 4},
	{name: "processes", process: true, nodes: 3, faults: []string{"crash", "pause-leader", "isolate-leader", "oneway-leader-in", "slow"}, duration: 12 * time.Second, seed: 5},
	{name: "processes-partitions", process: true, nodes: 3, faults: []string{"partition", "oneway-leader-out", "crash-leader", "crash-all", "pause-leader"}, duration: 10 * time.Second, seed: 6},
	{name: "everything", nodes: 3, faults: []string{"isolate-leader", "partition", "oneway-leader-out", "oneway-leader-in", "flaky", "slow", "crash", "crash-leader", "crash-all"}, duration: 15 * time.Second, seed: 7},
}

// TestChaos runs the CI scenarios or, with -duration, a soak.
//
// The CI scenarios run in parallel with each other and the package's other
// parallel tests (-parallel at a time): their length is set by timers (the
// scenario's duration, the faults' hold and quiet spells, elections, lease
// expiries), not by an amount of work. The in-process clusters take turns
// (takeInProcessTurn); a process cluster runs alongside.
func TestChaos(t *testing.T) {
	if *durationFlag > 0 {
		soak(t)
		return
	}
	t.Parallel()
	for _, sc := range ciScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			if *seedFlag != 0 {
				sc.seed = *seedFlag
			}
			replay := fmt.Sprintf("go test ./test/chaos -run 'TestChaos/^%s$' -v -args -seed %d", sc.name, sc.seed)
			runScenario(t, sc, replay)
		})
	}
	if *knownBugsFlag {
		for _, b := range knownBugs {
			t.Run("known-bugs/"+b.name, b.test)
		}
	}
}

// soak runs rounds of -round with consecutive seeds until -duration passes,
// through failures (each one fails its subtest, with its replay command).
// A round is a function of its seed and length alone, so `-seed S -duration
// L -round L` replays round S.
func soak(t *testing.T) {
	// go test stops a test binary at -timeout (10m unless given): a soak
	// that cannot finish must say so now, not be cut short.
	if deadline, ok := t.Deadline(); ok && time.Until(deadline) < *durationFlag+*roundFlag+5*time.Minute {
		t.Fatalf("a soak of %s does not fit in go test's -timeout (ends in %s): pass -timeout 0, e.g.\n"+
			"  go test ./test/chaos -run Chaos -timeout 0 -args -duration %s -seed %d",
			*durationFlag, time.Until(deadline).Round(time.Second), *durationFlag, *seedFlag)
	}
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000
	}
	end := time.Now().Add(*durationFlag)
	var ran time.Duration
	var failed []int64
	rounds := 0
	for ; time.Now().Before(end); seed++ {
		sc := soakScenario(seed, *roundFlag)
		replay := fmt.Sprintf("go test ./test/chaos -run 'TestChaos$' -v -timeout 0 -args -seed %d -duration %s -round %s", seed, *roundFlag, *roundFlag)
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runScenario(t, sc, replay) }) {
			failed = append(failed, seed)
		}
		ran += sc.duration
		rounds++
	}
	t.Logf("soak: %d rounds, %s under faults; failed seeds: %v", rounds, ran, failed)
}

// soakScenario draws a scenario from a seed: in-process or processes (one
// round in four), 3 or 5 nodes, and a random subset of the fault kinds.
func soakScenario(seed int64, length time.Duration) scenario {
	rng := rand.New(rand.NewPCG(uint64(seed), streamScenario))
	sc := scenario{name: "soak", seed: seed, duration: length, process: rng.IntN(4) == 0, nodes: 3 + 2*rng.IntN(2)}
	var avail []string
	for _, k := range faultKinds {
		if (sc.process && k.process) || (!sc.process && k.inProcess) {
			avail = append(avail, k.name)
		}
	}
	n := 2 + rng.IntN(len(avail)-1)
	for _, i := range rng.Perm(len(avail))[:n] {
		sc.faults = append(sc.faults, avail[i])
	}
	return sc
}
