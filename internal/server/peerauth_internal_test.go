package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/certgen"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/storage"
	"github.com/synod-io/synod/internal/transport"
)

// TestPeerServicesRefuseStrangers checks that, without peer TLS, every
// peer service refuses a caller that does not prove it holds the cluster's
// peer secret: a plaintext gRPC client (as anyone could write), one with
// another secret, and one speaking TLS. Before peer authentication, the
// plaintext caller could add a learner at its own address (and receive the
// whole database), remove members, move the leader, list the members and
// read a lease's keys.
func TestPeerServicesRefuseStrangers(t *testing.T) {
	t.Parallel()
	secret, err := peerauth.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Open(Config{
		Name: "n1", DataDir: "/n1", FS: vfs.NewMem(),
		ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
		TickInterval: 10 * time.Millisecond, PeerSecret: secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientAddr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "secret-key", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}

	withCreds := func(c credentials.TransportCredentials) []grpc.DialOption {
		return []grpc.DialOption{grpc.WithTransportCredentials(c)}
	}
	secretCreds := func(secret []byte, clusterID uint64) []grpc.DialOption {
		c, err := peerauth.Credentials(peerauth.Config{Secret: secret, ClusterID: clusterID})
		if err != nil {
			t.Fatal(err)
		}
		return withCreds(c)
	}
	other, err := peerauth.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	certs, err := certgen.WriteDir(filepath.Join(t.TempDir(), "certs"), nil, "root")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certs.PeerCert, certs.PeerKey)
	if err != nil {
		t.Fatal(err)
	}
	tlsCreds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})

	unary := []struct {
		method     string
		req, resp  proto.Message
		reveals    func(proto.Message) bool // what a member gets
		memberOnly bool                     // only a member may call it in this test (it changes things)
	}{
		{clusterMembersMethod, &pb.MemberListRequest{}, &pb.MemberListResponse{},
			func(m proto.Message) bool { return len(m.(*pb.MemberListResponse).Members) == 1 }, false},
		{clusterRangesMethod, &synodpb.ListRangesRequest{}, &synodpb.ListRangesResponse{},
			func(m proto.Message) bool { return len(m.(*synodpb.ListRangesResponse).Ranges) == 1 }, false},
		{leaseTimeToLiveMethod, &pb.LeaseTimeToLiveRequest{ID: int64(lease.ID), Keys: true}, &pb.LeaseTimeToLiveResponse{},
			func(m proto.Message) bool { return len(m.(*pb.LeaseTimeToLiveResponse).Keys) == 1 }, false},
		{leaseKeepAliveMethod, &pb.LeaseKeepAliveRequest{ID: int64(lease.ID)}, &pb.LeaseKeepAliveResponse{},
			func(m proto.Message) bool { return m.(*pb.LeaseKeepAliveResponse).TTL > 0 }, false},
		{clusterMemberAddMethod, &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1:1"}, IsLearner: true}, &pb.MemberAddResponse{}, nil, true},
		{clusterMemberRemoveMethod, &pb.MemberRemoveRequest{ID: srv.MemberID()}, &pb.MemberRemoveResponse{}, nil, true},
		{clusterMemberPromoteMethod, &pb.MemberPromoteRequest{ID: srv.MemberID()}, &pb.MemberPromoteResponse{}, nil, true},
		{clusterMoveLeaderMethod, &pb.MoveLeaderRequest{TargetID: srv.MemberID()}, &pb.MoveLeaderResponse{}, nil, true},
	}
	streams := []struct {
		name, method string
	}{{"Raft", "/synod.transport.v1.Peer/Raft"}, {"Snapshot", "/synod.transport.v1.Peer/Snapshot"}}

	for _, tc := range []struct {
		name  string
		creds []grpc.DialOption // nil: plaintext, the transport's default
		ok    bool
	}{
		{"plaintext", nil, false},
		{"another secret", secretCreds(other, srv.ClusterID()), false},
		{"tls with a certificate", withCreds(tlsCreds), false},
		{"the cluster's secret", secretCreds(secret, srv.ClusterID()), true},
		{"the cluster's secret, cluster not known yet", secretCreds(secret, 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := transport.Dial(srv.PeerAddr(), tc.creds)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, u := range unary {
				if tc.ok && u.memberOnly {
					continue
				}
				resp := proto.Clone(u.resp)
				err := conn.Invoke(ctx, u.method, u.req, resp)
				if tc.ok {
					if err != nil || !u.reveals(resp) {
						t.Errorf("%s as a member: got %v (err %v), want an answer", u.method, resp, err)
					}
				} else if code := status.Code(err); code != codes.Unavailable {
					t.Errorf("%s: got code %v (err %v, response %v), want %v", u.method, code, err, resp, codes.Unavailable)
				}
			}
			for _, st := range streams {
				stream, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: st.name, ClientStreams: true}, st.method)
				if tc.ok {
					if err != nil {
						t.Errorf("%s stream as a member: got %v, want it open", st.name, err)
					} else {
						_ = stream.CloseSend()
					}
				} else if code := status.Code(err); code != codes.Unavailable {
					t.Errorf("%s stream: got code %v (err %v), want %v", st.name, code, err, codes.Unavailable)
				}
			}
		})
	}
	members, err := srv.membersPB()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || srv.Published().Lead != srv.MemberID() {
		t.Fatalf("after the strangers: got %d members and leader %x, want 1 member, leading", len(members), srv.Published().Lead)
	}
}

// TestDataDirPeerSecret checks where a node's peer secret comes from: made
// by a single-member cluster, required to bootstrap several members or to
// start as a member added with member add, kept in the data dir, and, for a
// data dir made before peer authentication, taken from the configuration
// (or made, by a cluster's only member).
func TestDataDirPeerSecret(t *testing.T) {
	t.Parallel()
	fs := vfs.NewMem()
	cfg := func(dir, spec string, secret []byte) Config {
		return Config{
			Name: "n1", DataDir: dir, FS: fs, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
			AdvertisePeerURL: "127.0.0.1:9", InitialCluster: spec, PeerSecret: secret,
			TickInterval: 10 * time.Millisecond,
		}
	}
	open := func(c Config) (stored []byte, err error) {
		t.Helper()
		srv, err := Open(c)
		if err != nil {
			return nil, err
		}
		stored, found, lerr := loadPeerSecret(srv.db)
		if lerr != nil || !found || !bytes.Equal(stored, srv.peerSecret) {
			t.Fatalf("stored peer secret: got %x (found %v, err %v), want the node's %x", stored, found, lerr, srv.peerSecret)
		}
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		return stored, nil
	}
	// forget removes the stored secret, as in a data dir of an older Synod.
	forget := func(dir string) {
		t.Helper()
		db, err := storage.Open(storage.Options{Dir: dir, FS: fs})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Delete(keys.NodePeerSecretKey(), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	wantErr := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: got %v, want an error containing %q", what, err, want)
		}
	}
	s1, err := peerauth.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := peerauth.NewSecret()
	if err != nil {
		t.Fatal(err)
	}

	// A single-member cluster makes its own, and keeps it.
	made, err := open(cfg("/solo", "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := open(cfg("/solo", "", nil)); err != nil || !bytes.Equal(again, made) {
		t.Fatalf("restart: got secret %x (err %v), want the stored %x", again, err, made)
	}
	// An older data dir of a single-member cluster makes one too.
	forget("/solo")
	if _, err := open(cfg("/solo", "", nil)); err != nil {
		t.Fatalf("restart of an older single-member data dir: %v", err)
	}

	// Several members need the configured secret.
	const spec = "n1=127.0.0.1:9,n2=127.0.0.1:10"
	_, err = open(cfg("/multi", spec, nil))
	wantErr("bootstrap of several members without a secret", err, "must share a peer secret")
	if got, err := open(cfg("/multi", spec, s1)); err != nil || !bytes.Equal(got, s1) {
		t.Fatalf("bootstrap with a secret: got %x (err %v), want %x", got, err, s1)
	}
	if got, err := open(cfg("/multi", spec, nil)); err != nil || !bytes.Equal(got, s1) {
		t.Fatalf("restart without the secret: got %x (err %v), want the stored %x", got, err, s1)
	}
	_, err = open(cfg("/multi", spec, s2))
	wantErr("restart with another secret", err, "differs from the one stored in the data dir")

	// An older data dir of a member with peers takes the configured one.
	forget("/multi")
	_, err = open(cfg("/multi", spec, nil))
	wantErr("older data dir without a secret", err, "holds no peer secret")
	if got, err := open(cfg("/multi", spec, s2)); err != nil || !bytes.Equal(got, s2) {
		t.Fatalf("older data dir given a secret: got %x (err %v), want %x", got, err, s2)
	}

	// A member added with member add needs the secret to look itself up.
	existing := cfg("/added", spec, nil)
	existing.InitialClusterState = "existing"
	_, err = Open(existing)
	wantErr("existing without a secret", err, "needs the cluster's peer secret")
}
