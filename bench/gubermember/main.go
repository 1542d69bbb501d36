// Command gubermember runs one gubernator instance
// (github.com/gubernator-io/gubernator/v2, its defaults) for the bench's
// limits command, which builds it and starts three of them: gRPC on
// -client-addr, HTTP on -peer-addr, and its peers (all three instances,
// itself included) from -initial-cluster as name=grpc-addr/http-addr. It
// stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gubernator-io/gubernator/v2"
	"github.com/sirupsen/logrus"

	"github.com/synod-io/synod/bench/internal/member"
)

func main() {
	var a member.Args
	fs := flag.NewFlagSet("gubermember", flag.ContinueOnError)
	a.Register(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, a); err != nil {
		fmt.Fprintf(os.Stderr, "gubernator %s: %v\n", a.Name, err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, a member.Args) error {
	if a.PprofAddr != "" {
		stopPprof, err := member.ServePprof(a.PprofAddr)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	d, err := gubernator.SpawnDaemon(ctx, gubernator.DaemonConfig{
		InstanceID:        a.Name,
		GRPCListenAddress: a.ClientAddr,
		HTTPListenAddress: a.PeerAddr,
		AdvertiseAddress:  a.ClientAddr,
		PeerDiscoveryType: "none",
		Logger:            logrus.NewEntry(log),
	})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer d.Close()
	var peers []gubernator.PeerInfo
	for m := range strings.SplitSeq(a.InitialCluster, ",") {
		_, addrs, _ := strings.Cut(m, "=")
		grpcAddr, httpAddr, _ := strings.Cut(addrs, "/")
		peers = append(peers, gubernator.PeerInfo{GRPCAddress: grpcAddr, HTTPAddress: httpAddr})
	}
	d.SetPeers(peers)
	<-ctx.Done()
	return nil
}
