package client

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/api/synodpb"
)

// Group is a membership group: service instances join it with an ID and
// metadata on their session's lease, and disappear when they leave or their
// lease ends. Members are keys any etcd client can read:
// synod/groups/<group>/members/<member>, valued with the metadata.
type Group struct {
	c    *Client
	name string
}

// Member is a member of a group.
type Member struct {
	ID       string
	Metadata []byte
	Lease    clientv3.LeaseID
	// CreateRevision is when it joined, ModRevision its last update.
	CreateRevision, ModRevision int64
}

func memberFrom(m *synodpb.Member) Member {
	return Member{ID: m.Id, Metadata: m.Metadata, Lease: clientv3.LeaseID(m.Lease), CreateRevision: m.CreateRevision, ModRevision: m.ModRevision}
}

// EventType is the kind of a group change.
type EventType int

// The kinds of group changes.
const (
	// Joined: a member joined.
	Joined EventType = iota
	// Updated: a member joined again with new metadata.
	Updated
	// Left: a member left.
	Left
	// Expired: a member's lease ended (it expired, or was revoked) while it
	// was a member: its process died or lost the cluster.
	Expired
)

func (t EventType) String() string {
	switch t {
	case Joined:
		return "JOIN"
	case Updated:
		return "UPDATE"
	case Left:
		return "LEAVE"
	case Expired:
		return "EXPIRE"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// GroupEvent is one change of a group: the member after a join or update,
// as it was before a leave or expiry.
type GroupEvent struct {
	Type     EventType
	Member   Member
	Revision int64
}

// GroupWatchResponse is a batch of changes, in revision order. Every change
// up to Revision has been delivered. Err, in the last response of a watch,
// says why it ended early.
type GroupWatchResponse struct {
	Events   []GroupEvent
	Revision int64
	Err      error
}

// Group returns the group called name.
func (c *Client) Group(name string) *Group { return &Group{c: c, name: name} }

// Membership is a session's membership of a group.
type Membership struct {
	g      *Group
	s      *Session
	member Member
}

// Join makes the session a member of the group under the ID member, with
// metadata. Joining again with the same ID and session updates the
// metadata; an ID held by another session is refused (codes.AlreadyExists).
func (g *Group) Join(ctx context.Context, s *Session, member string, metadata []byte) (*Membership, error) {
	var resp *synodpb.JoinResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = g.c.groups.Join(ctx, &synodpb.JoinRequest{Group: g.name, Member: member, Metadata: metadata, Lease: int64(s.lease)})
		return err
	})
	if err != nil {
		return nil, sessionError(err)
	}
	return &Membership{g: g, s: s, member: memberFrom(resp.Member)}, nil
}

// Member returns the member as last joined or updated.
func (m *Membership) Member() Member { return m.member }

// Update replaces the member's metadata.
func (m *Membership) Update(ctx context.Context, metadata []byte) error {
	next, err := m.g.Join(ctx, m.s, m.member.ID, metadata)
	if err != nil {
		return err
	}
	m.member = next.member
	return nil
}

// Leave removes the member, if it is still this session's.
func (m *Membership) Leave(ctx context.Context) error {
	_, err := m.g.leave(ctx, m.member.ID, m.s.lease)
	return err
}

// Leave removes member from the group, whoever joined it; it reports
// whether it was a member.
func (g *Group) Leave(ctx context.Context, member string) (bool, error) {
	return g.leave(ctx, member, clientv3.NoLease)
}

func (g *Group) leave(ctx context.Context, member string, lease clientv3.LeaseID) (bool, error) {
	var resp *synodpb.LeaveResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = g.c.groups.Leave(ctx, &synodpb.LeaveRequest{Group: g.name, Member: member, Lease: int64(lease)})
		return err
	})
	if err != nil {
		return false, err
	}
	return resp.Left, nil
}

// Members returns the group's members, ordered by ID, and the revision they
// were read at (watch from the next one to follow the group from there).
func (g *Group) Members(ctx context.Context) ([]Member, int64, error) {
	var resp *synodpb.ListResponse
	err := retry(ctx, func() error {
		var err error
		resp, err = g.c.groups.List(ctx, &synodpb.ListRequest{Group: g.name})
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([]Member, 0, len(resp.Members))
	for _, m := range resp.Members {
		out = append(out, memberFrom(m))
	}
	return out, resp.Header.Revision, nil
}

// Watch streams the group's changes from revision from (0: every change
// after the current revision, read before Watch returns), in revision order
// and without gaps, through network failures (it resumes after the last
// revision delivered, on any node). The channel is closed when ctx ends, or
// after a response with Err when the history asked for was compacted (or
// the current revision could not be read).
func (g *Group) Watch(ctx context.Context, from int64) <-chan GroupWatchResponse {
	ch := make(chan GroupWatchResponse)
	var pinErr error
	if from <= 0 {
		// Pin "now" before returning: a change made after Watch returns
		// must be delivered, and a resumed watch must leave no gap.
		var resp *clientv3.GetResponse
		pinErr = retry(ctx, func() error {
			var err error
			resp, err = g.c.Get(ctx, "synod/groups/"+g.name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err
		})
		if pinErr == nil {
			from = resp.Header.Revision + 1
		}
	}
	go func() { // owned: ends with ctx or a permanent error
		defer close(ch)
		if pinErr != nil {
			if ctx.Err() == nil {
				select {
				case ch <- GroupWatchResponse{Err: fmt.Errorf("read the current revision: %w", pinErr)}:
				case <-ctx.Done():
				}
			}
			return
		}
		g.watch(ctx, from, ch)
	}()
	return ch
}

func (g *Group) watch(ctx context.Context, from int64, ch chan<- GroupWatchResponse) {
	send := func(r GroupWatchResponse) bool {
		select {
		case ch <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		stream, err := g.c.groups.Watch(ctx, &synodpb.GroupWatchRequest{Group: g.name, StartRevision: from})
		for err == nil {
			var resp *synodpb.GroupWatchResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			from = resp.Header.Revision + 1
			if len(resp.Events) == 0 {
				continue
			}
			out := GroupWatchResponse{Revision: resp.Header.Revision}
			for _, e := range resp.Events {
				out.Events = append(out.Events, GroupEvent{Type: EventType(e.Type), Member: memberFrom(e.Member), Revision: e.Revision})
			}
			if !send(out) {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if c := status.Code(err); c == codes.OutOfRange || c == codes.InvalidArgument {
			send(GroupWatchResponse{Revision: from - 1, Err: err})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryPause):
		}
	}
}
