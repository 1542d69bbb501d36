// Package chaos runs Synod clusters under injected faults while concurrent
// etcd clients read and write, and checks the history they record: it must
// be linearizable (internal/lincheck, with porcupine), revisions must follow
// real time, and no acknowledged write may be missing after every node
// restarts.
//
// Two kinds of clusters take the faults:
//
//   - in-process clusters (internal/testcluster) of 3 or 5 nodes, whose
//     transport partitions (both ways or one way), drops, delays, duplicates
//     and reorders Raft messages, and whose nodes crash like a power failure
//     (Pebble on a crashable in-memory filesystem loses what was not synced);
//   - real synod processes, killed with SIGKILL and restarted, frozen with
//     SIGSTOP past their election timeout and thawed with SIGCONT, and cut
//     off through a TCP proxy between peers (each node advertises the proxy's
//     address with --advertise-peer-url and dials from its own loopback
//     address with --peer-source-ip, so the proxy knows every link).
//
// One seed drives a run: the fault schedule (faults are drawn as shuffled
// rounds of the scenario's fault kinds, and a run lasts at least one round,
// so it covers every kind), each client's operations and the random choices
// of faulty links. Which node a fault aimed at "the leader" hits is decided
// when it strikes, and thread timing varies, so a replay reproduces the
// faults and the workload, not every interleaving; a bug found once is
// usually found again within a few replays.
//
// `go test ./test/chaos` runs a fixed set of seeds (part of CI). A soak:
//
//	go test ./test/chaos -run Chaos -timeout 0 -args -duration 30m -seed 1
//
// runs rounds of -round (default 1m) with seeds 1, 2, ... and a scenario
// drawn from each seed. A failure prints its seed, the fault schedule and the
// command that replays it, and writes the history as JSON and porcupine's
// visualization as HTML under -out (default a new directory in $TMPDIR).
//
// The workload: clients put, get, delete and compare-and-swap (txn) a few
// keys; one watcher per node watches them all for the whole run (through
// crashes and restarts), and must see every event once, in revision order,
// equal to the store's event log, which must itself agree with the history;
// lease workers grant leases, attach a key, renew some, read the key and
// abandon them: no lease may expire before a grant or keepalive said, and
// every abandoned lease must expire. The lock workload (lock_test.go) has
// clients contend for one lock and write a fenced key while the leader is
// crashed and holders stall past their lease; lincheck.CheckLock checks that
// no two holders' guarded writes succeeded for overlapping periods.
//
// The limits workload (limits_test.go) has callers take from a strict and
// a local rate limit through every node, far above their rate, while the
// leader (the limits' owner) is crashed and isolated in turns: per key, the
// decisions allowed must stay within rate x time + burst plus 1% (strict)
// or the limit's local share of its capacity (local), and every node up and
// connected must decide again within an election timeout of each new
// leader.
//
// The queue workload (queue_test.go, TestQueueChaos) runs producers and
// workers of the job queues against 3- and 5-node in-process clusters and
// 3 synod processes under crashes, pauses and partitions, and checks a
// model: every acknowledged push completes, the store accepted exactly one
// completion per job and it carried the job's last claim's token (a worker
// paused past its lease completes late, and must be refused), a group's
// jobs never ran at once unless the first one's completion was refused,
// and each firing of a cron schedule pushed one job.
//
// With SYNOD_TEST_PRESPLIT=1 every cluster the suite bootstraps starts
// pre-split into data ranges, with a size limit of 1 MiB per range
// (internal/testbin): a cluster of processes into many (one per printable
// first byte, and k0 to k9 for the workload's keys), an in-process one
// into 8 (which still puts the workload's keys k0 to k3 in ranges of their
// own); CI runs the suite both ways.
//
// A bug the harness finds gets a focused reproduction, run only with
// -known-bugs while it is open (the knownBugs list), and a regression test
// once fixed: leasefreeze_test.go holds the two lease bugs it found (a thawed
// former leader revoking, or renewing, leases it no longer governs).
package chaos
