package datarange

import (
	"reflect"
	"testing"

	"github.com/synod-io/synod/internal/kv"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestNotDetached checks which attached keys a revocation's deletes left
// in the index: those with no live key, or whose live key names another
// lease (an index out of step with the keys, which the revocation mends).
func TestNotDetached(t *testing.T) {
	ev := func(k string, l int64) kv.Event {
		return kv.Event{KV: &mvccpb.KeyValue{Key: []byte(k)}, PrevKV: &mvccpb.KeyValue{Key: []byte(k), Lease: l}}
	}
	attached := [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d")}
	got := notDetached(attached, []kv.Event{ev("a", 7), ev("c", 8), ev("d", 7)}, 7)
	if want := [][]byte{[]byte("b"), []byte("c")}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := notDetached(attached[:1], []kv.Event{ev("a", 7)}, 7); len(got) != 0 {
		t.Fatalf("all detached: got %q, want none", got)
	}
}
