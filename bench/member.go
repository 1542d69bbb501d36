package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/synod-io/synod/bench/internal/member"
)

// memberCommand is the hidden subcommand that runs one etcd member in this
// process: `bench member ...`. Synod members run the synodmember command.
const memberCommand = "member"

// launcher is how a system's member processes are started: the program and
// the arguments that come before the member's flags.
type launcher struct {
	path   string
	prefix []string
	// flags renders a member's arguments for the program; nil means
	// member.Args.Flags (the bench command's and synodmember's).
	flags func(member.Args) []string
	// quotaBytes is every member's storage quota (member.Args.QuotaBytes).
	quotaBytes int64
	// dataRangeSplits are the split keys of the static data ranges every
	// member bootstraps (member.Args.DataRangeSplits; Synod only).
	dataRangeSplits []string
	// metrics makes every member serve /metrics on a port of its own
	// (member.Args.MetricsAddr; Synod only), from which the workloads read
	// the revision oracle's counters (oracle.go).
	metrics bool
}

// etcdLauncher re-executes this binary as an etcd member.
func etcdLauncher() (launcher, error) {
	exe, err := os.Executable()
	if err != nil {
		return launcher{}, fmt.Errorf("find own executable: %w", err)
	}
	return launcher{path: exe, prefix: []string{memberCommand}}, nil
}

// synodMemberPackage is the command that runs one Synod member.
const synodMemberPackage = "github.com/synod-io/synod/bench/synodmember"

// buildSynodMember builds the synodmember command into dir with the go tool;
// it must run inside the bench module (cd bench).
func buildSynodMember(ctx context.Context, dir string) (launcher, error) {
	path := filepath.Join(dir, "synodmember")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, synodMemberPackage)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return launcher{}, fmt.Errorf("build %s (run the command from the bench directory): %w\n%s", synodMemberPackage, err, out)
	}
	return launcher{path: path}, nil
}

// runMember runs one etcd member until SIGTERM or SIGINT; it returns the exit
// code.
func runMember(args []string) int {
	var a member.Args
	fs := flag.NewFlagSet(memberCommand, flag.ContinueOnError)
	a.Register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serveEtcd(ctx, a); err != nil {
		fmt.Fprintf(os.Stderr, "etcd member %s: %v\n", a.Name, err)
		return 1
	}
	return 0
}

func serveEtcd(ctx context.Context, a member.Args) error {
	if a.PprofAddr != "" {
		stopPprof, err := member.ServePprof(a.PprofAddr)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	cfg := embed.NewConfig()
	cfg.Name = a.Name
	cfg.Dir = a.DataDir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	var err error
	if cfg.ListenClientUrls, err = httpURLs(a.ClientAddr); err != nil {
		return err
	}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	if cfg.ListenPeerUrls, err = httpURLs(a.PeerAddr); err != nil {
		return err
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	var members []string
	for m := range strings.SplitSeq(a.InitialCluster, ",") {
		name, addr, ok := strings.Cut(m, "=")
		if !ok {
			return fmt.Errorf("bad initial cluster member %q", m)
		}
		members = append(members, name+"=http://"+addr)
	}
	cfg.InitialCluster = strings.Join(members, ",")
	cfg.InitialClusterToken = "bench"
	if a.QuotaBytes != 0 {
		cfg.QuotaBackendBytes = a.QuotaBytes
	}
	cfg.ClusterState = embed.ClusterStateFlagNew

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd failed while starting: %w", err)
	case <-ctx.Done():
		return nil
	case <-time.After(time.Minute):
		return errors.New("etcd not ready after a minute")
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd failed: %w", err)
	}
}

func httpURLs(hostPort string) ([]url.URL, error) {
	u, err := url.Parse("http://" + hostPort)
	if err != nil {
		return nil, fmt.Errorf("parse address %q: %w", hostPort, err)
	}
	return []url.URL{*u}, nil
}
