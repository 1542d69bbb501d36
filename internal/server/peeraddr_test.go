package server_test

import (
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/server"
)

func TestAdvertisedPeerURL(t *testing.T) {
	t.Parallel()
	fs := vfs.NewMem()
	cfg := func(advertise string) server.Config {
		return server.Config{
			Name: "n1", DataDir: "/n1", FS: fs,
			ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
			AdvertisePeerURL: advertise, PeerSourceIP: "127.0.0.1",
		}
	}
	// A single-node cluster records the advertised URL, not the listener.
	srv, err := server.Open(cfg("127.0.0.1:9"))
	if err != nil {
		t.Fatal(err)
	}
	members, err := srv.Members(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || len(members[0].PeerURLs) != 1 || members[0].PeerURLs[0] != "http://127.0.0.1:9" {
		t.Fatalf("members: got %+v, want one with peer URL http://127.0.0.1:9", members)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// It restarts with the same advertised URL on any listener, and refuses
	// another advertised URL.
	srv, err = server.Open(cfg("http://127.0.0.1:9"))
	if err != nil {
		t.Fatalf("restart with the same advertised URL: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = server.Open(cfg("127.0.0.1:10"))
	if err == nil || !strings.Contains(err.Error(), "advertises http://127.0.0.1:10") {
		t.Fatalf("restart with another advertised URL: got %v, want an error saying it advertises http://127.0.0.1:10", err)
	}
}

func TestPeerAddressValidation(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cfg  server.Config
		want string
	}{
		{server.Config{DataDir: "/d", AdvertisePeerURL: "ftp://x:1"}, "advertise peer url"},
		{server.Config{DataDir: "/d", PeerSourceIP: "not-an-ip"}, `peer source ip: "not-an-ip" is not an IP address`},
	} {
		tt.cfg.FS = vfs.NewMem()
		_, err := server.Open(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("open %+v: got %v, want an error containing %q", tt.cfg, err, tt.want)
		}
	}
}
