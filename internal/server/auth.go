package server

import (
	"context"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
)

// newAuthorizer builds the node's authorizer from the configuration: its
// tokens (simple or JWT) and its view of the replicated auth state.
func (s *Server) newAuthorizer() (*auth.Authorizer, error) {
	tc, err := auth.ParseTokenConfig(s.cfg.AuthToken)
	if err != nil {
		return nil, fmt.Errorf("auth token: %w", err)
	}
	tokens, err := auth.NewTokens(tc, s.cfg.AuthTokenTTL, nil)
	if err != nil {
		return nil, fmt.Errorf("auth token: %w", err)
	}
	return auth.New(auth.Config{
		DB:         s.db,
		Tokens:     tokens,
		BcryptCost: s.cfg.BcryptCost,
		Header:     s.revisionHeader,
		Sync:       s.syncApplied,
		// A request refused as stale is tried again for as long as a
		// request may wait for its write.
		RetryTimeout: s.cfg.RequestTimeout,
		Login:        auth.LoginConfig{Backoff: s.cfg.AuthLoginBackoff, MaxBackoff: s.cfg.AuthLoginMaxBackoff},
	}), nil
}

// syncApplied waits until this node applied everything committed in the
// system range (the auth state's) before the call and handed the results to
// onApply (a no-op run on the replica's goroutine comes after the onApply
// of the batch the read waited for).
func (s *Server) syncApplied(ctx context.Context) error {
	if err := s.linearizeRange(ctx, keys.SystemRangeID); err != nil {
		return err
	}
	return s.store.Do(ctx, keys.SystemRangeID, func(*replica.Replica) {})
}

// Authorizer returns the node's authorizer (tests inspect its state).
func (s *Server) Authorizer() *auth.Authorizer { return s.authz }

// registerAuthTokens records the simple tokens assigned by applied
// Authenticate commands, so that every node accepts them.
func (s *Server) registerAuthTokens(toks []auth.Token) {
	for _, t := range toks {
		s.authz.Tokens().Register(t)
	}
}

// authBackend is the Auth service's view of the node.
type authBackend struct{ s *Server }

func (b authBackend) Header() *pb.ResponseHeader { return b.s.revisionHeader() }

func (b authBackend) Propose(ctx context.Context, kind raftcmd.Kind, req proto.Message) (any, error) {
	return b.s.Propose(ctx, kind, req)
}

func (b authBackend) Linearize(ctx context.Context) error { return b.s.linearize(ctx) }
