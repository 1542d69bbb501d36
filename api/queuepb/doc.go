// Package queuepb holds the protobuf messages and gRPC service of Synod's
// job queues (synod.queue.v1.Queue): push, claim streams, complete, fail,
// schedules and the rest. The code is generated from queue.proto by
// scripts/genproto.sh; the proto is self-contained and carries C# and Java
// package options, so other languages generate a client from it alone.
package queuepb
