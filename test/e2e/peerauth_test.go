package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestRogueNodeGetsNothing replays the attack on the plaintext peer port
// against real processes with auth enabled: a stranger adds a learner at
// its own address through a member's peer port, then starts a node there
// with --initial-cluster-state existing to receive the whole database. The
// peer port must refuse it (no membership change), and the node it starts
// must get no data; nor may it join through the client API without root.
func TestRogueNodeGetsNothing(t *testing.T) {
	t.Parallel()
	etcdctlPath(t)
	ports := freePorts(t, 9)
	dir := t.TempDir()
	secret := newPeerSecret(t)
	var spec, eps, peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", ports[3+i]))
		spec = append(spec, fmt.Sprintf("n%d=%s", i+1, peers[i]))
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", ports[i]))
	}
	for i := range 3 {
		startProc(t, fmt.Sprintf("n%d", i+1), "start", "--name", fmt.Sprintf("n%d", i+1),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--client-addr", eps[i], "--peer-addr", peers[i],
			"--initial-cluster", strings.Join(spec, ","), "--peer-secret-file", secret,
			"--tick-interval", "20ms", "--bcrypt-cost", "4")
	}
	all := "--endpoints=" + strings.Join(eps, ",")
	poll(t, 20*time.Second, "cluster ready", func() (bool, string) {
		r := etcdctl(t, "", all, "put", "ready", "1")
		return r.code == 0, fmt.Sprintf("%+v", r)
	})
	ctl := func(args ...string) result { return etcdctl(t, "", append([]string{all}, args...)...) }
	want(t, "user add root", ctl("user", "add", "root:rootpw"), "User root created\n")
	want(t, "grant root", ctl("user", "grant-role", "root", "root"), "Role root is granted to user root\n")
	want(t, "auth enable", ctl("auth", "enable"), "Authentication Enabled\n")
	root := func(args ...string) result { return ctl(append([]string{"--user", "root:rootpw"}, args...)...) }
	const value = "the-crown-jewels-3f9c2a"
	want(t, "root put", root("put", "jewels", value), "OK\n")
	members := func() string { return root("member", "list").stdout }
	before := members()
	if strings.Count(before, "\n") != 3 {
		t.Fatalf("member list: got %q, want 3 members", before)
	}

	// 1. The stranger calls the peer services of every member (the
	// membership methods answer only at the leader) as any gRPC client can.
	rogueClient, roguePeer := fmt.Sprintf("127.0.0.1:%d", ports[6]), fmt.Sprintf("127.0.0.1:%d", ports[7])
	for i, peer := range peers {
		conn, err := grpc.NewClient(peer, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		add := &pb.MemberAddResponse{}
		err = conn.Invoke(ctx, "/synod.cluster.v1.Leader/MemberAdd", &pb.MemberAddRequest{PeerURLs: []string{"http://" + roguePeer}, IsLearner: true}, add)
		if code := status.Code(err); code != codes.Unavailable {
			t.Fatalf("MemberAdd on the peer port of n%d without the peer secret: got code %v (err %v, response %v), want %v", i+1, code, err, add, codes.Unavailable)
		}
		list := &pb.MemberListResponse{}
		err = conn.Invoke(ctx, "/synod.cluster.v1.Leader/Members", &pb.MemberListRequest{}, list)
		if code := status.Code(err); code != codes.Unavailable {
			t.Errorf("Members on the peer port of n%d without the peer secret: got code %v (err %v, %d members), want %v", i+1, code, err, len(list.Members), codes.Unavailable)
		}
	}

	// 2. It starts a node at its address as a member added with member
	// add: without the secret, and with a guessed one.
	forged := newPeerSecret(t)
	rogueDir := filepath.Join(dir, "rogue")
	rogueArgs := []string{"start", "--name", "rogue", "--data-dir", rogueDir,
		"--client-addr", rogueClient, "--peer-addr", roguePeer,
		"--initial-cluster", "rogue=" + roguePeer + ",n1=" + peers[0], "--initial-cluster-state", "existing",
		"--tick-interval", "20ms"}
	r := synod(t, "", rogueArgs...)
	if r.code == 0 || !strings.Contains(r.stderr, "--initial-cluster-state existing needs the cluster's --peer-secret-file") {
		t.Errorf("rogue node without a secret: exit %d, stderr %q; want a refusal asking for the secret", r.code, r.stderr)
	}
	rogue := startProc(t, "rogue", append(rogueArgs, "--peer-secret-file", forged)...)
	if code := rogue.wait(t, 30*time.Second); code == 0 || !strings.Contains(rogue.stderr.String(), "find this member in the existing cluster") {
		t.Errorf("rogue node with a guessed secret: exit %d, stderr %q; want it to fail to find itself", code, lastLines(rogue.stderr.String(), 5))
	}

	// 3. It joins through the client API, which hands out the secret to
	// root only.
	joiner := startProc(t, "joiner", "start", "--name", "joiner", "--data-dir", filepath.Join(dir, "joiner"),
		"--client-addr", rogueClient, "--peer-addr", roguePeer, "--join", eps[0], "--tick-interval", "20ms")
	if code := joiner.wait(t, 30*time.Second); code == 0 || !strings.Contains(joiner.stderr.String(), "get the cluster's peer secret") {
		t.Errorf("joiner without root: exit %d, stderr %q; want it refused the peer secret", code, lastLines(joiner.stderr.String(), 5))
	}

	if after := members(); after != before {
		t.Errorf("member list after the stranger: got\n%s\nwant\n%s", after, before)
	}
	found := ""
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(path, rogueDir) && !strings.HasPrefix(path, filepath.Join(dir, "joiner")) {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(value)) {
			found = path
		}
		return nil
	})
	if found != "" {
		t.Errorf("the stranger's data dir holds the cluster's data (%s), want none", found)
	}
	want(t, "root get after the stranger", root("get", "jewels", "--print-value-only"), value+"\n")
}
