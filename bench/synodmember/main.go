// Command synodmember runs one Synod node (internal/server, default
// configuration, but for -data-range-splits) for the bench command, which builds it and starts three of
// them; it serves /debug/pprof on -pprof-addr and stops on SIGTERM or SIGINT.
// It is a separate binary from the bench command because a binary cannot
// link both Synod's server and etcd's: their protobuf registrations clash.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/synod-io/synod/bench/internal/member"
	"github.com/synod-io/synod/internal/gcpolicy"
	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/server"
)

func main() {
	gcpolicy.Apply() // as the synod binary does
	var a member.Args
	fs := flag.NewFlagSet("synodmember", flag.ContinueOnError)
	a.Register(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, a); err != nil {
		fmt.Fprintf(os.Stderr, "synod member %s: %v\n", a.Name, err)
		os.Exit(1)
	}
}

// splits parses -data-range-splits.
func splits(list string) [][]byte {
	var out [][]byte
	for k := range strings.SplitSeq(list, ",") {
		if k != "" {
			out = append(out, []byte(k))
		}
	}
	return out
}

func serve(ctx context.Context, a member.Args) error {
	if a.PprofAddr != "" {
		stopPprof, err := member.ServePprof(a.PprofAddr)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	secret, err := peerauth.Parse([]byte(a.PeerSecret))
	if err != nil {
		return fmt.Errorf("-peer-secret: %w", err)
	}
	s, err := server.Open(server.Config{
		Name:           a.Name,
		DataDir:        a.DataDir,
		ClientAddr:     a.ClientAddr,
		PeerAddr:       a.PeerAddr,
		InitialCluster: a.InitialCluster,
		ClusterToken:   "bench",
		PeerSecret:     secret,
		MetricsAddr:    a.MetricsAddr,
		Logger:         logger,
		// 0 leaves Synod's default (8 GiB).
		QuotaBackendBytes: a.QuotaBytes,
		DataRangeSplits:   splits(a.DataRangeSplits),
	})
	if err != nil {
		return fmt.Errorf("open synod: %w", err)
	}
	var fatal error
	select {
	case <-ctx.Done():
	case fatal = <-s.Fatal():
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("close synod: %w", err)
	}
	if fatal != nil {
		return fmt.Errorf("synod failed: %w", fatal)
	}
	return nil
}
