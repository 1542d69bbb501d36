package server

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/peerauth"
)

// The peer secret: how members without peer TLS know each other. See
// Config.PeerSecret and internal/peerauth.

// peerSecretHelp tells an operator how to give a node the cluster's secret.
const peerSecretHelp = "give every member the same --peer-secret-file (make one with 'synod peer-secret new FILE'; " +
	"a running cluster's is printed by 'synod peer-secret get', as root when auth is enabled), or configure peer TLS"

// errNeedPeerSecret refuses to bootstrap several members that have no
// way to authenticate each other.
var errNeedPeerSecret = errors.New("the members of a new cluster started in separate processes must share a peer secret " +
	"that authenticates their connections: " + peerSecretHelp)

// newClusterSecret returns the peer secret of a new cluster whose initial
// members are spec: the configured one; else, when this node is the only
// member, a new random one (no other process needs to agree on it); else
// nil: the members must be given one, or use peer TLS.
func newClusterSecret(configured []byte, spec string) ([]byte, error) {
	if configured != nil {
		return configured, nil
	}
	members, err := cluster.ParseInitialCluster(spec)
	if err != nil {
		return nil, err
	}
	if len(members) == 1 {
		return peerauth.NewSecret()
	}
	return nil, nil
}

// loadPeerSecret reads the peer secret stored in the data dir.
func loadPeerSecret(db pebble.Reader) ([]byte, bool, error) {
	v, closer, err := db.Get(keys.NodePeerSecretKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read the peer secret: %w", err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// putPeerSecret adds the peer secret to a batch (nil: none to store).
func putPeerSecret(b *pebble.Batch, secret []byte) error {
	if secret == nil {
		return nil
	}
	return b.Set(keys.NodePeerSecretKey(), secret, nil)
}

// storedPeerSecret returns the peer secret of a node whose data dir is
// initialized. A data dir without one (made before Synod authenticated
// peers, or restored from a backup for several members) takes the
// configured secret, or makes its own when the node is the cluster's only
// member; with peer TLS it may do without.
func (s *Server) storedPeerSecret(id ident) ([]byte, error) {
	stored, found, err := loadPeerSecret(s.db)
	if err != nil {
		return nil, err
	}
	if found {
		if s.cfg.PeerSecret != nil && !hmac.Equal(stored, s.cfg.PeerSecret) {
			return nil, fmt.Errorf("the peer secret given (--peer-secret-file) differs from the one stored in the data dir %s: "+
				"give the cluster's secret ('synod peer-secret get'), or none: the stored one is used", s.cfg.DataDir)
		}
		return stored, nil
	}
	secret := s.cfg.PeerSecret
	if secret == nil {
		members, err := cluster.ListMembers(s.db)
		if err != nil {
			return nil, err
		}
		alone := len(members) == 1 && members[0].ID == id.MemberID
		switch {
		case alone:
			if secret, err = peerauth.NewSecret(); err != nil {
				return nil, err
			}
		case s.peerTLS != nil:
			return nil, nil
		default:
			return nil, fmt.Errorf("the data dir %s holds no peer secret (it was made before Synod authenticated peer connections, "+
				"or restored from a backup) and this member has peers: %s", s.cfg.DataDir, peerSecretHelp)
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := putPeerSecret(b, secret); err != nil {
		return nil, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return nil, fmt.Errorf("store the peer secret: %w", err)
	}
	s.cfg.Logger.Info("stored the cluster's peer secret in the data dir", "data-dir", s.cfg.DataDir)
	return secret, nil
}

// Client API: the peer secret for a node that joins (root-only when auth
// is enabled: the auth interceptor lets only root make requests it has no
// rule for).

const (
	peerSecretServiceName = "synod.cluster.v1.PeerSecret"
	// PeerSecretMethod is the client API method that returns the cluster's
	// peer secret (google.protobuf.Empty in, google.protobuf.BytesValue
	// out). Only root may call it when auth is enabled.
	PeerSecretMethod = "/" + peerSecretServiceName + "/Get"
)

// ErrNoPeerSecret is the status of a member that holds no peer secret
// (its peers authenticate with TLS).
var ErrNoPeerSecret = status.Error(codes.FailedPrecondition, "synod: this member holds no peer secret: its peers authenticate with TLS")

type peerSecretService interface{}

func (s *Server) registerPeerSecretService(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: peerSecretServiceName,
		HandlerType: (*peerSecretService)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Get",
			Handler: func(srv any, ctx context.Context, dec func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
				req := &emptypb.Empty{}
				if err := dec(req); err != nil {
					return nil, err
				}
				handler := func(context.Context, any) (any, error) {
					secret := srv.(*Server).peerSecret
					if secret == nil {
						return nil, ErrNoPeerSecret
					}
					return wrapperspb.Bytes(secret), nil
				}
				if intercept == nil {
					return handler(ctx, req)
				}
				return intercept(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: PeerSecretMethod}, handler)
			},
		}},
		Metadata: "synod/peersecret.proto",
	}, s)
}

// FetchPeerSecret asks a cluster's client API for its peer secret.
func FetchPeerSecret(ctx context.Context, conn grpc.ClientConnInterface) ([]byte, error) {
	resp := &wrapperspb.BytesValue{}
	if err := conn.Invoke(ctx, PeerSecretMethod, &emptypb.Empty{}, resp); err != nil {
		return nil, err
	}
	if err := peerauth.CheckSecret(resp.Value); err != nil {
		return nil, fmt.Errorf("the cluster's peer secret: %w", err)
	}
	return resp.Value, nil
}
