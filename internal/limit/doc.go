// Package limit is the node side of Synod's rate limiters: the Limits gRPC
// service, the owner of the limits' keys, the forwarding of requests to
// it, and the shares of capacity nodes decide from in LOCAL mode.
//
// A limit's keys are owned by the leader of the range that holds the
// limit (internal/limit/limitsm keeps the replicated part), so nodes never
// disagree about ownership while membership changes. The owner decides in
// memory (package algo) and records the keys' states in checkpoints,
// batched Raft commands fenced to its term. It answers what a key allowed
// only while the allowed tokens beyond the key's last committed checkpoint
// stay within the key's allowance (none before its first checkpoint); a
// new owner charges every key with a checkpoint that allowance when it
// takes over. So an owner that crashes, or is cut off and deposed, has
// answered nothing the next owner does not count: strict limits never
// over-admit, and a failover costs each key at most its allowance of
// under-admission (see "Rate limiters" in docs/design.md).
//
// Other nodes forward requests to the owner over the peer connection, in
// batches (a few calls in flight, the rest queued for the next). In LOCAL
// mode each node holds shares of keys' capacity, granted by the owner and
// counted there as taken, and decides from them without a round trip; the
// shares outstanding bound the over-admission. SHADOW limits decide as
// strict ones and never refuse. A decision that cannot be made within the
// limit's timeout is allowed or refused as the limit says (fail open or
// closed).
package limit
