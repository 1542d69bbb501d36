// Package member holds what the bench command and its member processes share:
// the flags that describe one cluster member, and the pprof endpoint every
// member serves. It imports neither etcd's server nor Synod's, so that each
// member binary links only its own system (their protobuf registrations
// clash: Synod's api/v3electionpb and etcd's share proto names).
package member

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"time"
)

// Args describes one member to its process.
type Args struct {
	Name           string
	DataDir        string
	ClientAddr     string
	PeerAddr       string
	PprofAddr      string
	InitialCluster string // name=host:port of the peer addresses, comma-separated
	// PeerSecret is the cluster's peer secret in hex, with which Synod's
	// members authenticate each other (etcd's ignore it).
	PeerSecret string
	// QuotaBytes is the storage quota (etcd's --quota-backend-bytes,
	// Synod's QuotaBackendBytes); 0 leaves each system's default.
	QuotaBytes int64
	// MetricsAddr is the host:port on which a Synod member serves
	// /metrics (empty: none; etcd's members ignore it).
	MetricsAddr string
	// DataRangeSplits are the split keys of the static data ranges a new
	// Synod cluster bootstraps (server.Config.DataRangeSplits),
	// comma-separated, sorted; empty: one data range. etcd's members
	// ignore it.
	DataRangeSplits string
}

// Flags returns the command-line flags that Parse reads back.
func (a Args) Flags() []string {
	f := []string{
		"-name", a.Name,
		"-data-dir", a.DataDir,
		"-client-addr", a.ClientAddr,
		"-peer-addr", a.PeerAddr,
		"-pprof-addr", a.PprofAddr,
		"-initial-cluster", a.InitialCluster,
		"-peer-secret", a.PeerSecret,
		"-quota-bytes", strconv.FormatInt(a.QuotaBytes, 10),
		"-metrics-addr", a.MetricsAddr,
	}
	// Only when set, so that a synodmember built from a commit before the
	// flag (synod@<commit>) still starts.
	if a.DataRangeSplits != "" {
		f = append(f, "-data-range-splits", a.DataRangeSplits)
	}
	return f
}

// Register defines the flags of Args on fs.
func (a *Args) Register(fs *flag.FlagSet) {
	fs.StringVar(&a.Name, "name", "", "member name")
	fs.StringVar(&a.DataDir, "data-dir", "", "data directory")
	fs.StringVar(&a.ClientAddr, "client-addr", "", "client host:port")
	fs.StringVar(&a.PeerAddr, "peer-addr", "", "peer host:port")
	fs.StringVar(&a.PprofAddr, "pprof-addr", "", "host:port serving /debug/pprof (empty: none)")
	fs.StringVar(&a.InitialCluster, "initial-cluster", "", "name=peer-host:port,...")
	fs.StringVar(&a.PeerSecret, "peer-secret", "", "the cluster's peer secret, hex (Synod only)")
	fs.Int64Var(&a.QuotaBytes, "quota-bytes", 0, "storage quota in bytes (0: the system's default)")
	fs.StringVar(&a.MetricsAddr, "metrics-addr", "", "host:port serving /metrics (Synod only; empty: none)")
	fs.StringVar(&a.DataRangeSplits, "data-range-splits", "", "split keys of the static data ranges a new cluster bootstraps, comma-separated, sorted (Synod only; empty: one data range)")
}

// ServePprof serves the runtime profiles on addr until the returned function
// is called.
func ServePprof(addr string) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for pprof on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(lis)
	}()
	return func() {
		_ = srv.Close()
		wg.Wait()
	}, nil
}
