package datarange

import (
	"testing"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestInSpan: a range over [c, m) takes writes whose keys all lie in it
// and refuses the others (the router never sends them; a node with stale
// descriptors could).
func TestInSpan(t *testing.T) {
	m, err := New(Config{Start: []byte("c"), End: []byte("m")})
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string) *etcdpb.RequestOp {
		return &etcdpb.RequestOp{Request: &etcdpb.RequestOp_RequestPut{RequestPut: &etcdpb.PutRequest{Key: []byte(k)}}}
	}
	for _, tc := range []struct {
		name string
		req  any
		want bool
	}{
		{"put inside", &etcdpb.PutRequest{Key: []byte("d")}, true},
		{"put at the start", &etcdpb.PutRequest{Key: []byte("c")}, true},
		{"put at the end", &etcdpb.PutRequest{Key: []byte("m")}, false},
		{"put below", &etcdpb.PutRequest{Key: []byte("b")}, false},
		{"delete inside", &etcdpb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("m")}, true},
		{"delete over the end", &etcdpb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("n")}, false},
		{"delete from a key on", &etcdpb.DeleteRangeRequest{Key: []byte("d"), RangeEnd: []byte{0}}, false},
		{"empty delete below", &etcdpb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("a")}, true},
		{"txn inside", &etcdpb.TxnRequest{Compare: []*etcdpb.Compare{{Key: []byte("e")}}, Success: []*etcdpb.RequestOp{put("f")}}, true},
		{"txn with a put outside", &etcdpb.TxnRequest{Success: []*etcdpb.RequestOp{put("f")}, Failure: []*etcdpb.RequestOp{put("x")}}, false},
		{"txn with a compare outside", &etcdpb.TxnRequest{Compare: []*etcdpb.Compare{{Key: []byte("a")}}}, false},
		{"lease grant", &etcdpb.LeaseGrantRequest{ID: 1}, true},
	} {
		if got := m.inSpan(tc.req); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	every := &Machine{}
	if !every.inSpan(&etcdpb.PutRequest{Key: []byte("x")}) {
		t.Error("a range over every key refused a put")
	}
	last, err := New(Config{Start: []byte("m")})
	if err != nil {
		t.Fatal(err)
	}
	if !last.inSpan(&etcdpb.DeleteRangeRequest{Key: []byte("n"), RangeEnd: []byte{0}}) {
		t.Error("the last range refused a delete from a key on")
	}
}
