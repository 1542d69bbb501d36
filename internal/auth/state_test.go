package auth

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestCacheNeverServesAStateOlderThanAnInvalidate interleaves a lock-free
// caller with a reload: while the reload that follows an Invalidate has
// read the new state but not stored it yet, the lock-free path must not
// hand out the state from before the Invalidate (it used to: the reload
// cleared the stale flag before it stored the state it loaded).
func TestCacheNeverServesAStateOlderThanAnInvalidate(t *testing.T) {
	db := openMem(t)
	mustApply(t, db, &pb.AuthUserAddRequest{Name: "root", HashedPassword: "h"})
	c := NewCache(db)
	old, err := c.Current()
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, db, &pb.AuthUserAddRequest{Name: "alice", HashedPassword: "h"})
	c.Invalidate() // the node applied the change: nobody may see old any more

	inWindow := false
	c.testingLoaded = func() {
		inWindow = true
		if st, ok := c.fresh(); ok && st.Revision == old.Revision {
			t.Errorf("lock-free read during a reload after an Invalidate: got the state of revision %d, want none or a newer one", st.Revision)
		}
	}
	st, err := c.Current()
	if err != nil {
		t.Fatal(err)
	}
	if !inWindow {
		t.Fatal("Current after an Invalidate: got no reload, want one")
	}
	if st.Revision <= old.Revision {
		t.Fatalf("Current after an Invalidate: got revision %d, want more than %d", st.Revision, old.Revision)
	}

	// An Invalidate racing with a reload (it lands after the load began) is
	// not lost: the next call loads again.
	mustApply(t, db, &pb.AuthUserAddRequest{Name: "bob", HashedPassword: "h"})
	c.Invalidate()
	c.testingLoaded = func() {
		c.testingLoaded = nil
		mustApply(t, db, &pb.AuthUserAddRequest{Name: "carol", HashedPassword: "h"})
		c.Invalidate()
	}
	if _, err := c.Current(); err != nil {
		t.Fatal(err)
	}
	st, err = c.Current()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Users["carol"]; !ok {
		t.Fatalf("Current after an Invalidate during a reload: got users %v, want carol among them", userList(st))
	}
}

func userList(st *State) []string {
	var out []string
	for n := range st.Users {
		out = append(out, n)
	}
	return out
}
