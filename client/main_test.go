package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/server"
)

// endpoints are the client addresses of the in-process cluster TestMain
// starts for the examples and the tests that share it.
var endpoints []string

func TestMain(m *testing.M) {
	stop, err := startCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, "client tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startCluster starts three in-memory nodes in this process and waits until
// they serve writes.
func startCluster() (stop func(), err error) {
	var servers []*server.Server
	stop = func() {
		for _, s := range servers {
			s.Close()
		}
	}
	var peers, clients []net.Listener
	var spec []string
	for i := range 3 {
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return stop, err
		}
		cl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return stop, err
		}
		peers, clients = append(peers, pl), append(clients, cl)
		spec = append(spec, fmt.Sprintf("n%d=%s", i+1, pl.Addr()))
		endpoints = append(endpoints, cl.Addr().String())
	}
	secret, err := peerauth.NewSecret()
	if err != nil {
		return stop, err
	}
	for i := range 3 {
		s, err := server.Open(server.Config{
			Name: fmt.Sprintf("n%d", i+1), DataDir: "/data", FS: vfs.NewMem(),
			PeerListener: peers[i], ClientListener: clients[i],
			InitialCluster: strings.Join(spec, ","), TickInterval: 10 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler), PeerSecret: secret,
		})
		if err != nil {
			return stop, err
		}
		servers = append(servers, s)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		return stop, err
	}
	defer cli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Put(ctx, "ready", "")
		cancel()
		if err == nil {
			return stop, nil
		}
		if time.Now().After(deadline) {
			return stop, fmt.Errorf("cluster not ready: %w", err)
		}
	}
}
