package server_test

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/storage"
	"github.com/synod-io/synod/internal/testcluster"
)

// TestDeletedDataDirStopsMember deletes a running follower's data dir: the
// member stops with ErrDataLost instead of acknowledging writes into files
// that no longer have a name, and fails its health checks. Started again
// on the empty dir with the same settings, it stops as soon as the leader
// shows it lost entries it had acknowledged (raft would panic), and from
// then on refuses to start.
func TestDeletedDataDirStopsMember(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.MetricsAddr = "127.0.0.1:0"
	}})
	leader := c.WaitLeader()
	cli := c.Client(leader)
	writeKeys(t, cli, "k/", 20)
	f := c.Followers(leader)[0]
	srv := f.Server()
	if err := f.FS().RemoveAll(f.DataDir()); err != nil {
		t.Fatal(err)
	}
	fatal := func(srv *server.Server, what string) error {
		t.Helper()
		select {
		case err := <-srv.Fatal():
			if !errors.Is(err, server.ErrDataLost) {
				t.Fatalf("%s: got %v, want %v", what, err, server.ErrDataLost)
			}
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: member still running after 10s, want it stopped with %v", what, server.ErrDataLost)
			return nil
		}
	}
	if err := fatal(srv, "data dir deleted"); !strings.Contains(err.Error(), "was deleted") {
		t.Fatalf("data dir deleted: got %q, want it to say the data dir was deleted", err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + srv.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "data is gone") {
			t.Fatalf("%s of the stopped member: got %d %q, want 503 saying its data is gone", path, resp.StatusCode, body)
		}
	}
	put(t, cli, "after", "x") // the other two go on
	f.Stop()

	// Started again with the same settings on the empty data dir.
	f.Restart()
	if err := fatal(f.Server(), "restarted on an empty data dir"); !strings.Contains(err.Error(), "lacks entries") {
		t.Fatalf("restarted on an empty data dir: got %q, want it to say the log lacks acknowledged entries", err)
	}
	f.Stop()
	err := f.Start()
	if err == nil || !strings.Contains(err.Error(), server.ErrDataLost.Error()) {
		t.Fatalf("start after the loss was found: got %v, want a refusal saying %q", err, server.ErrDataLost)
	}
	put(t, cli, "after2", "x")
}

// TestIncompleteDataDirIsRefused starts a member on data dirs a restore or
// a first start left incomplete: it refuses, rather than bootstrapping an
// empty member where data was expected.
func TestIncompleteDataDirIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func(dataDir string) error {
		s, err := server.Open(server.Config{DataDir: dataDir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
		if err == nil {
			s.Close()
		}
		return err
	}
	// Storage without a member in it (what an older restore left when it
	// was killed before it committed).
	partial := filepath.Join(dir, "partial")
	db, err := storage.Open(storage.Options{Dir: partial})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := open(partial); err == nil || !strings.Contains(err.Error(), "not a complete member's data dir") {
		t.Fatalf("start on storage without a member: got %v, want a refusal", err)
	}
	// What an interrupted restore leaves: the directory it builds in.
	restored := filepath.Join(dir, "restored")
	if err := os.MkdirAll(restored+".restoring", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := open(restored); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("start after an interrupted restore: got %v, want a refusal", err)
	}
	// A directory with unrelated files only (a mount point's lost+found)
	// is a new data dir.
	fresh := filepath.Join(dir, "fresh")
	if err := os.MkdirAll(filepath.Join(fresh, "lost+found"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := open(fresh); err != nil {
		t.Fatalf("start on a directory without storage: %v", err)
	}
}
