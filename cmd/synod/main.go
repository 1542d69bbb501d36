// Command synod runs Synod nodes and talks to them.
//
// Synod is a Raft-replicated key-value store that serves the etcd v3 gRPC
// API. `synod start` runs one node, `synod demo` a local three-node cluster,
// and the client commands (put, get, del, txn, compact, members, status)
// speak the etcd API to any Synod (or etcd) cluster.
package main

import (
	"context"
	"os"

	"github.com/synod-io/synod/internal/gcpolicy"
)

func main() {
	// A server's garbage is mostly per request; see internal/gcpolicy. The
	// client commands are short-lived and unaffected either way.
	gcpolicy.Apply()
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
