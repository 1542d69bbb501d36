// Package raftcmd defines the command one Raft log entry carries. A command
// names the range it belongs to and carries everything its application needs,
// so that every replica applies it to the same result: no clocks, no reads of
// other ranges. The proposer's member ID and a request ID let the proposing
// node hand the result back to the waiting client.
//
// The encoding is protobuf wire format written by hand with protowire, so new
// fields can be added without breaking entries already in logs.
package raftcmd
