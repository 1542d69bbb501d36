// Command bench measures Synod against etcd on the same machine, in the same
// run, with the same workloads, and writes the results as Markdown.
//
//	cd bench && go run . -out ../docs/benchmarks.md
//
// It starts a 3-member etcd cluster (go.etcd.io/etcd/server/v3/embed, default
// durability) and a 3-node Synod cluster (internal/server, default
// configuration) side by side, and drives both with go.etcd.io/etcd/client/v3.
// Each workload runs -rounds times on each system, the systems taking turns
// and the one that goes first alternating (ABBA with the default 2 rounds), so
// that the host's drift in speed over minutes falls on both; a system's row
// pools its rounds, and the report gives each round's throughput too. A round
// in which no operation completes is reported as a failure. Each member runs in its own process, so the CPU time and
// peak RSS of the servers are read from /proc without counting the load
// generator, which runs in this process on the same cores. etcd members are
// this binary re-executed with the hidden "member" subcommand; Synod members
// are the synodmember command, which bench builds with the go tool at start
// (so run it from the bench directory). No binary links both servers: their
// protobuf registrations clash (Synod's api/v3electionpb reuses etcd's proto
// names), and this one links no Synod package at all.
//
// Workloads, each closed-loop unless said otherwise, measured per round over
// -duration after -warmup:
//
//   - put-1: puts of new keys (256-byte values) by one client, on the leader;
//   - put-1000: the same with -clients clients over -conns connections;
//   - get-linearizable, get-serializable: single-key reads of preloaded keys;
//   - txn-4-puts: transactions of four puts of new keys;
//   - txn-2-keys: transactions of two puts of new keys in one data range;
//   - txn-2-ranges: transactions of two puts of new keys in two different
//     data ranges of -data-ranges (on Synod a transaction across ranges; with
//     one range, or on etcd, an ordinary txn of two puts: the baseline);
//   - watch: -watchers watchers on one prefix, spread over the connections
//     (the watchers of one connection share its watch stream), and puts at
//     -watch-put-rate per second (open loop); the latency is from the put's
//     start to the event's arrival at each watcher, the throughput counts
//     delivered events;
//   - lease-keepalive: one lease per client, keep-alive round trips on raw
//     LeaseKeepAlive streams (as etcd's own benchmark tool does);
//   - lock: -lock-clients sessions contending for one
//     go.etcd.io/etcd/client/v3/concurrency mutex, Lock then Unlock;
//   - lock-rpc: the same through the server-side lock service (v3lock Lock,
//     then Unlock of the returned key), where the server does the waiting;
//   - election: -lock-clients sessions campaigning in one concurrency
//     Election, each leader resigning at once (campaign+resign per op).
//
// A workload whose RPCs a system answers with codes.Unimplemented is reported
// as "n/a (not implemented yet)".
//
// Data ranges (issue 15). With -data-ranges N (default 1) Synod's members
// bootstrap N static data ranges (server.Config.DataRangeSplits, passed as
// synodmember's -data-range-splits); etcd ignores it. The keys of the put,
// get and txn workloads start with one of 100 shard prefixes ("z37/"), in
// every run, and the ranges split between shards, so each of these workloads
// spreads its keys evenly over the ranges (ranges.go); the watch, lock and
// election keys and the leases stay in the first range.
//
// -systems may name synod@<commit> for the workloads too: Synod built from
// that commit of this repository, beside today's, rounds interleaved (the
// regression table of the ranges compares with synod@fb899af, main from
// before them). A Synod from before static data ranges is built with the
// -data-ranges field left out of synodmember (a go build -overlay) and runs
// with one Raft group whatever -data-ranges says.
//
// Per workload and system it reports throughput, p50/p99/p999 latency, server
// CPU seconds per 1,000 operations (user+system time of the three member
// processes during the window), peak RSS (sum of the members' VmHWM, reset
// at the start of the window), and bytes on disk per key written (growth of
// the members' data directories in allocated blocks, averaged over members,
// divided by the keys the workload wrote; it includes the write-ahead logs).
//
// For Synod it reports too, round by round, the load on the revision oracle
// (issue 15): requests for revisions, batches (one ReadIndex round each) and
// revisions served per second, beside the workload's throughput. Synod's
// members serve /metrics (synodmember's -metrics-addr) during the
// workloads, and the harness sums the synod_oracle_*_total counters of the
// three members read just before and just after each window (oracle.go);
// etcd, and a synod@<commit> without a counter, show "–".
//
// With -profile-dir it also saves CPU and allocation profiles of every member
// during the workloads named by -profile; profiling perturbs the numbers, so
// publish tables from runs without it.
//
// The watch-memory subcommand measures instead what watchers whose clients
// stopped reading cost a member's memory:
//
//	cd bench && go run . watch-memory [-systems etcd,synod] [-rounds 2]
//
// The job queues are measured against River on PostgreSQL by another
// command, queuebench (see its doc comment):
//
//	cd bench && go run ./queuebench
//
// For each round and system it starts fresh clusters, opens -watchers
// watchers of one prefix on a follower over -conns gRPC connections whose
// sockets it then stops reading, writes -puts values of -value-size bytes
// under the prefix through the leader, and reports the watched follower's
// resident memory (before, peak, at the end of the writes and at each -after
// offset), beside the other follower's, which has no watchers. With
// -synod-member it runs a prebuilt synodmember binary, to measure another
// version of Synod. It prints a Markdown table.
//
// Lease scenarios (issue 21). With -leases idle,storm the command runs these
// instead of the workloads, each system on a cluster of its own started for
// the scenario, one cluster at a time, and writes them into a section of
// their own (leasescale.go):
//
//   - idle: grants leases (10-hour TTL, 256 concurrent clients) up to each
//     count of -idle-leases (default 250,000 then 1,000,000), rests
//     -idle-settle, then measures the leader's CPU (and the three members')
//     over -rounds windows of -idle-window with no traffic, and the leader's
//     heap (HeapInuse after a GC, from its pprof endpoint) and RSS growth per
//     lease;
//   - storm: grants -storm-leases leases (default 100,000), each with one key,
//     each with the TTL that makes it expire -storm-ttl after the first grant
//     (to the second), puts at -storm-put-rate per second (open loop) until
//     the storm is over, and times every deletion with a watch: the clear
//     time, the revoke rate by 10 s, the put latencies during the storm and
//     the CPU used; -rounds storms per system, each on a new cluster.
//
// Bulk load (issue 21, item 3). With -bulk 4096,32768 the command loads
// -bulk-bytes (default 4GiB) of random values of each size under sequential
// keys from -bulk-clients (64) closed-loop clients, each system on a new
// cluster, one at a time (bulk.go): MB/s overall and by GiB, put latencies,
// write amplification (the members' write_bytes from /proc/<pid>/io over the
// values' bytes), disk, CPU and peak RSS.
//
// Idle ranges (issue 15). With -ranges-idle 1,100,1000 the command measures
// what a Synod cluster at rest costs per data range, each count on a new
// cluster of each Synod system (synod, synod@<commit>; etcd, one Raft
// group, is left out), one
// cluster at a time (rangesidle.go): it splits the cluster online into that
// many data ranges with the Ranges service's SplitRange (keys r/000001 up,
// 50 per call, in descending order), timing it until every member lists
// every range with a leader, puts one key in each range, rests
// -idle-settle, then measures each member's CPU over -rounds windows of
// -idle-window with no traffic, and after them each member's RSS, Go heap,
// goroutines and the ranges it leads; it reports the growth of RSS and heap
// per range over the first count. With -profile-dir the idle leader is
// profiled for one more window at each count.
//
// etcd's own tool (issue 21, item 4). With -etcd-tool all (or a list of
// put, put-1, range-l, range-s, txn-put, lease-keepalive, stm) the command
// builds etcd's benchmark command from the peers module (bench/peers, a
// module of its own that pins go.etcd.io/etcd/v3/tools/benchmark and etcd
// 3.6's server) and runs it against every system with the flags of etcd's
// performance guide, the clusters side by side, the systems taking turns
// (etcdtool.go). -systems may then name etcd@3.6: etcd 3.6's own binary,
// built from the same module, beside the embedded etcd 3.7.
//
// There -systems may also name synod@<commit>: Synod built from that commit of
// the work tree (git archive, and the bench module with its replace directive
// pointed there), to measure before and after in one run. With -profile-dir
// the idle leader is profiled for one more window at each count, and the
// storm's leader for 30 s from 5 s into the storm.
package main
