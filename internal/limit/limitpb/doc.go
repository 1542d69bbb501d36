// Package limitpb holds the rate limiters' internal messages: the payloads
// of their Raft commands, the stored definitions and checkpointed states,
// and the calls between nodes. The code is generated from limitpb.proto by
// scripts/genproto.sh; none of it is a client API (that is api/synodpb).
package limitpb
