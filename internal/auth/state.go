package auth

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/internal/keys"
)

// RootUser and RootRole are etcd's administrative user and role: the root
// role may do everything, and enabling auth requires the root user with it.
const (
	RootUser = "root"
	RootRole = "root"
)

// State is one immutable version of the auth state.
type State struct {
	Enabled  bool
	Revision uint64
	Users    map[string]*authpb.User
	Roles    map[string]*authpb.Role
}

// IsRoot reports whether user has the root role.
func (s *State) IsRoot(user string) bool {
	u, ok := s.Users[user]
	return ok && slices.Contains(u.Roles, RootRole)
}

// Revision reads the auth revision (0 if auth state was never written).
func Revision(r pebble.Reader) (uint64, error) {
	v, closer, err := r.Get(keys.AuthRevisionKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read auth revision: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("auth revision has %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Enabled reads whether auth is enabled.
func Enabled(r pebble.Reader) (bool, error) {
	v, closer, err := r.Get(keys.AuthEnabledKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read auth enabled flag: %w", err)
	}
	defer closer.Close()
	return len(v) == 1 && v[0] == 1, nil
}

// Load reads the whole auth state.
func Load(r pebble.Reader) (*State, error) {
	st := &State{Users: map[string]*authpb.User{}, Roles: map[string]*authpb.Role{}}
	var err error
	if st.Revision, err = Revision(r); err != nil {
		return nil, err
	}
	if st.Enabled, err = Enabled(r); err != nil {
		return nil, err
	}
	if err := scan(r, keys.AuthUserSpan(), func(v []byte) error {
		u := &authpb.User{}
		if err := proto.Unmarshal(v, u); err != nil {
			return fmt.Errorf("decode user: %w", err)
		}
		st.Users[string(u.Name)] = u
		return nil
	}); err != nil {
		return nil, err
	}
	if err := scan(r, keys.AuthRoleSpan(), func(v []byte) error {
		ro := &authpb.Role{}
		if err := proto.Unmarshal(v, ro); err != nil {
			return fmt.Errorf("decode role: %w", err)
		}
		st.Roles[string(ro.Name)] = ro
		return nil
	}); err != nil {
		return nil, err
	}
	return st, nil
}

func scan(r pebble.Reader, span keys.Span, fn func(v []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return fmt.Errorf("scan auth state: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("scan auth state: %w", err)
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return it.Error()
}

// Cache serves the current auth state of a node from memory. The node calls
// Invalidate when it applies an auth change or installs a snapshot, before
// it answers the proposals and releases the reads of that batch, so a read
// after a ReadIndex wait sees every auth change applied before it. Requests
// pay no storage read (reading the auth revision from Pebble on every
// request cost a tenth of a node's CPU under load).
//
// Every Invalidate starts a new generation; a cached state serves only the
// generation it was loaded in, so no caller gets a state loaded before an
// Invalidate that returned before its call.
type Cache struct {
	db  pebble.Reader
	gen atomic.Uint64 // bumped by Invalidate
	cur atomic.Pointer[cached]
	mu  sync.Mutex // serializes reloads

	// testingLoaded, if set, runs after a reload read the state and before
	// it is stored (tests interleave a lock-free caller there).
	testingLoaded func()
}

type cached struct {
	st  *State
	gen uint64 // the generation current when the load began
}

// NewCache returns a cache over db.
func NewCache(db pebble.Reader) *Cache { return &Cache{db: db} }

// Invalidate makes the next Current reload the state from storage.
func (c *Cache) Invalidate() { c.gen.Add(1) }

// fresh returns the cached state if it is of the current generation.
func (c *Cache) fresh() (*State, bool) {
	if e := c.cur.Load(); e != nil && e.gen == c.gen.Load() {
		return e.st, true
	}
	return nil, false
}

// Current returns the node's current auth state.
func (c *Cache) Current() (*State, error) {
	// The common case, on every request: no lock.
	if st, ok := c.fresh(); ok {
		return st, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.fresh(); ok {
		return st, nil // another caller reloaded it meanwhile
	}
	// The generation is read before the load: an Invalidate racing with the
	// load below leaves the stored state of an older generation, which the
	// next call loads again.
	gen := c.gen.Load()
	r := c.db
	if db, ok := c.db.(*pebble.DB); ok {
		// One consistent view: an apply committing mid-load must not tear
		// the state (its Invalidate then makes the next call load again).
		snap := db.NewSnapshot()
		defer snap.Close()
		r = snap
	}
	st, err := Load(r)
	if err != nil {
		return nil, err
	}
	if c.testingLoaded != nil {
		c.testingLoaded()
	}
	c.cur.Store(&cached{st: st, gen: gen})
	return st, nil
}
