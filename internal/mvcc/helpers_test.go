package mvcc

import (
	"bytes"
	"fmt"
	"log"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// quietLogger drops Pebble's informational messages, which would drown the
// test output.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(f string, args ...any) { log.Printf(f, args...) }
func (quietLogger) Fatalf(f string, args ...any) { log.Fatalf(f, args...) }

func openDB(t testing.TB) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatalf("open pebble: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close pebble: %v", err)
		}
	})
	return db
}

// commit applies fn to a fresh indexed batch and commits it.
func commit(t testing.TB, db *pebble.DB, fn func(b *pebble.Batch)) {
	t.Helper()
	b := db.NewIndexedBatch()
	defer func() {
		if err := b.Close(); err != nil {
			t.Errorf("close batch: %v", err)
		}
	}()
	fn(b)
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func mustPut(t testing.TB, rw ReadWriter, key, value string, lease, rev int64, sub int32) (prev, kv *mvccpb.KeyValue) {
	t.Helper()
	prev, kv, err := Put(rw, []byte(key), []byte(value), lease, rev, sub)
	if err != nil {
		t.Fatalf("put %q at %d: %v", key, rev, err)
	}
	return prev, kv
}

func mustDelete(t testing.TB, rw ReadWriter, key string, rev int64, sub int32) *mvccpb.KeyValue {
	t.Helper()
	prev, err := Delete(rw, []byte(key), rev, sub)
	if err != nil {
		t.Fatalf("delete %q at %d: %v", key, rev, err)
	}
	return prev
}

func mustRange(t testing.TB, r pebble.Reader, key, end []byte, rev int64, opts RangeOptions) RangeResult {
	t.Helper()
	res, err := Range(r, key, end, rev, opts)
	if err != nil {
		t.Fatalf("range [%q, %q) at %d: %v", key, end, rev, err)
	}
	return res
}

func kv(key, value string, create, mod, version, lease int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{
		Key: []byte(key), Value: []byte(value), CreateRevision: create,
		ModRevision: mod, Version: version, Lease: lease,
	}
}

func kvString(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{%q=%q c%d m%d v%d l%d}", kv.Key, kv.Value, kv.CreateRevision,
		kv.ModRevision, kv.Version, kv.Lease)
}

func kvsString(kvs []*mvccpb.KeyValue) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = kvString(kv)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func sameKV(a, b *mvccpb.KeyValue) bool {
	return proto.Equal(a, b)
}

func sameKVs(a, b []*mvccpb.KeyValue) bool {
	return slices.EqualFunc(a, b, sameKV)
}

// model is a straightforward in-memory reference of the MVCC history.
type model struct {
	versions map[string][]modelVersion // oldest first
}

type modelVersion struct {
	rev       int64
	sub       int32
	tombstone bool
	kv        *mvccpb.KeyValue
}

func newModel() *model { return &model{versions: map[string][]modelVersion{}} }

func (m *model) visible(key string, rev int64) *modelVersion {
	vs := m.versions[key]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].rev <= rev {
			return &vs[i]
		}
	}
	return nil
}

func (m *model) get(key string, rev int64) *mvccpb.KeyValue {
	v := m.visible(key, rev)
	if v == nil || v.tombstone {
		return nil
	}
	return v.kv
}

func (m *model) put(key, value string, lease, rev int64, sub int32) {
	prev := m.get(key, rev)
	nkv := kv(key, value, rev, rev, 1, lease)
	if prev != nil {
		nkv.CreateRevision, nkv.Version = prev.CreateRevision, prev.Version+1
	}
	m.set(key, modelVersion{rev: rev, sub: sub, kv: nkv})
}

func (m *model) delete(key string, rev int64, sub int32) bool {
	if m.get(key, rev) == nil {
		return false
	}
	m.set(key, modelVersion{rev: rev, sub: sub, tombstone: true})
	return true
}

func (m *model) set(key string, v modelVersion) {
	vs := m.versions[key]
	if n := len(vs); n > 0 && vs[n-1].rev == v.rev {
		vs[n-1] = v
		return
	}
	m.versions[key] = append(vs, v)
}

func (m *model) sortedKeys() []string {
	ks := make([]string, 0, len(m.versions))
	for k := range m.versions {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (m *model) rangeAt(key, end []byte, rev int64, opts RangeOptions) RangeResult {
	var res RangeResult
	ks := m.sortedKeys()
	if opts.Reverse {
		slices.Reverse(ks)
	}
	for _, k := range ks {
		if bytes.Compare([]byte(k), key) < 0 || (end != nil && bytes.Compare([]byte(k), end) >= 0) {
			continue
		}
		v := m.get(k, rev)
		if v == nil {
			continue
		}
		res.Count++
		if opts.CountOnly || (opts.Limit > 0 && int64(len(res.KVs)) >= opts.Limit) {
			continue
		}
		out := proto.Clone(v).(*mvccpb.KeyValue)
		if opts.KeysOnly {
			out.Value = nil
		}
		res.KVs = append(res.KVs, out)
	}
	return res
}

// testAlphabet holds keys chosen to exercise the escaping of 0x00 and 0xff
// and prefix relationships.
var testAlphabet = []string{"a", "a\x00", "a\x00\x00", "a\xff", "ab", "b", "\x00", "\xff", "\xff\xff", "z"}

// randomHistory writes n random revisions (each one to four puts or deletes)
// into db and into a model; it returns the model and the last revision.
func randomHistory(t testing.TB, rng *rand.Rand, db *pebble.DB, n int) (*model, int64) {
	t.Helper()
	m := newModel()
	var rev int64
	for range n {
		rev++
		commit(t, db, func(b *pebble.Batch) {
			ops := 1 + rng.IntN(4)
			var sub int32
			for range ops {
				key := testAlphabet[rng.IntN(len(testAlphabet))]
				if rng.IntN(3) == 0 {
					if mustDelete(t, b, key, rev, sub) != nil {
						m.delete(key, rev, sub)
						sub++
					}
					continue
				}
				value := fmt.Sprintf("v%d.%d", rev, sub)
				lease := int64(rng.IntN(3))
				mustPut(t, b, key, value, lease, rev, sub)
				m.put(key, value, lease, rev, sub)
				sub++
			}
		})
	}
	return m, rev
}

// randomBounds picks a range over the test alphabet, sometimes unbounded or
// empty.
func randomBounds(rng *rand.Rand) (key, end []byte) {
	key = []byte(testAlphabet[rng.IntN(len(testAlphabet))])
	switch rng.IntN(4) {
	case 0:
		return key, nil
	case 1:
		return []byte{}, nil
	default:
		return key, []byte(testAlphabet[rng.IntN(len(testAlphabet))])
	}
}
