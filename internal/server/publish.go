package server

import (
	"context"
	"slices"
	"time"

	"github.com/synod-io/synod/internal/cluster"
	"github.com/synod-io/synod/internal/raftcmd"
)

// publishLoop records this member's name and client URL in the replicated
// member list (what MemberList shows), retrying until it is committed.
func (s *Server) publishLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		m, ok, err := cluster.GetMember(s.db, s.id.MemberID)
		if err != nil {
			s.logger.Error("read own member record", "err", err)
			return
		}
		if !ok || (m.Name == s.id.Name && slices.Equal(m.ClientURLs, []string{s.clientURL})) {
			return
		}
		wait := s.cfg.TickInterval // until a leader is known, look every tick
		if s.Published().Lead != 0 {
			rec := cluster.Member{ID: s.id.MemberID, Name: s.id.Name, ClientURLs: []string{s.clientURL}}
			if _, err := s.proposeRaw(ctx, raftcmd.KindMemberPublish, rec.Encode()); err == nil {
				s.logger.Info("published member attributes", "client-url", s.clientURL)
				return
			}
			wait, backoff = backoff, min(2*backoff, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
