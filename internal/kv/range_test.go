package kv

import (
	"fmt"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// rangeEnv holds, at revision 9:
//
//	key       value  create  mod  version
//	"\x00"    "n"    5       5    1
//	"a"       "3"    1       8    3      (puts at 1, 4, 8)
//	"a\x00"   "1"    2       2    1
//	"b"       "2"    7       7    1      (created at 3, deleted at 6, recreated at 7)
//	"c"       "1"    9       9    1
//	"\xff"    "0"    3       3    1
func rangeEnv(t *testing.T) *env {
	e := newEnv(t)
	e.put("a", "1")                                                              // 1
	e.put("a\x00", "1")                                                          // 2
	e.mustTxn(&pb.TxnRequest{Success: ops(putOp("b", "9"), putOp("\xff", "0"))}) // 3
	e.put("a", "2")                                                              // 4
	e.put("\x00", "n")                                                           // 5
	e.mustDelete(&pb.DeleteRangeRequest{Key: []byte("b")})                       // 6
	e.put("b", "2")                                                              // 7
	e.put("a", "3")                                                              // 8
	e.put("c", "1")                                                              // 9
	if e.meta.Revision != 9 {
		t.Fatalf("fixture revision: got %d, want 9", e.meta.Revision)
	}
	return e
}

func TestRangeKeyConventions(t *testing.T) {
	e := rangeEnv(t)
	tests := []struct {
		name     string
		key, end string
		want     []string
	}{
		{"single key", "a", "", []string{"a"}},
		{"single missing key", "zz", "", []string{}},
		{"prefix a", "a", "b", []string{"a", "a\x00"}},
		{"from b to end", "b", "\x00", []string{"b", "c", "\xff"}},
		{"all keys", "\x00", "\x00", []string{"\x00", "a", "a\x00", "b", "c", "\xff"}},
		{"end equals key", "b", "b", []string{}},
		{"end below key", "c", "a", []string{}},
		{"key with nul", "a\x00", "", []string{"a\x00"}},
		{"0xff key", "\xff", "", []string{"\xff"}},
		{"range to 0xff", "c", "\xff", []string{"c"}},
		{"range end 0xff 0xff", "c", "\xff\xff", []string{"c", "\xff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.mustRange(&pb.RangeRequest{Key: []byte(tt.key), RangeEnd: []byte(tt.end)})
			if got := keysOf(resp.Kvs); !slices.Equal(got, tt.want) {
				t.Errorf("keys: got %q, want %q", got, tt.want)
			}
			if resp.Count != int64(len(tt.want)) {
				t.Errorf("count: got %d, want %d", resp.Count, len(tt.want))
			}
			if resp.Header.GetRevision() != 9 {
				t.Errorf("header revision: got %d, want 9", resp.Header.GetRevision())
			}
		})
	}
}

func TestRangeRevisions(t *testing.T) {
	e := rangeEnv(t)
	if err := e.apply(func(a *Applier) error {
		_, err := a.Compact(&pb.CompactionRequest{Revision: 3})
		return err
	}); err != nil {
		t.Fatalf("compact: %v", err)
	}
	all := func(rev int64) *pb.RangeRequest {
		return &pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Revision: rev}
	}
	tests := []struct {
		rev     int64
		want    []string
		wantErr error
	}{
		{rev: 0, want: []string{"\x00=n", "a=3", "a\x00=1", "b=2", "c=1", "\xff=0"}},
		{rev: -1, want: []string{"\x00=n", "a=3", "a\x00=1", "b=2", "c=1", "\xff=0"}},
		{rev: 9, want: []string{"\x00=n", "a=3", "a\x00=1", "b=2", "c=1", "\xff=0"}},
		{rev: 6, want: []string{"\x00=n", "a=2", "a\x00=1", "\xff=0"}},
		{rev: 3, want: []string{"a=1", "a\x00=1", "b=9", "\xff=0"}},
		{rev: 2, wantErr: rpctypes.ErrGRPCCompacted},
		{rev: 10, wantErr: rpctypes.ErrGRPCFutureRev},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rev), func(t *testing.T) {
			resp, err := e.rangeReq(all(tt.rev))
			wantErr(t, "range", err, tt.wantErr)
			if err != nil {
				return
			}
			var got []string
			for _, kv := range resp.Kvs {
				got = append(got, fmt.Sprintf("%s=%s", kv.Key, kv.Value))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// etcd reports the current revision, not the one read.
			if resp.Header.GetRevision() != 9 {
				t.Errorf("header revision: got %d, want 9", resp.Header.GetRevision())
			}
		})
	}
}

func TestRangeKVFields(t *testing.T) {
	e := rangeEnv(t)
	resp := e.mustRange(&pb.RangeRequest{Key: []byte("a"), Revision: 4})
	want := kv("a", "2", 1, 4, 2, 0)
	if len(resp.Kvs) != 1 || str(resp.Kvs[0]) != str(want) {
		t.Errorf("got %v, want %s", resp.Kvs, str(want))
	}
	resp = e.mustRange(&pb.RangeRequest{Key: []byte("b")})
	want = kv("b", "2", 7, 7, 1, 0)
	if len(resp.Kvs) != 1 || str(resp.Kvs[0]) != str(want) {
		t.Errorf("recreated key: got %v, want %s", resp.Kvs, str(want))
	}
}

func TestRangeSort(t *testing.T) {
	e := rangeEnv(t)
	all := []string{"\x00", "a", "a\x00", "b", "c", "\xff"}
	tests := []struct {
		name   string
		order  pb.RangeRequest_SortOrder
		target pb.RangeRequest_SortTarget
		limit  int64
		want   []string
		more   bool
	}{
		{"none key", pb.RangeRequest_NONE, pb.RangeRequest_KEY, 0, all, false},
		{"ascend key", pb.RangeRequest_ASCEND, pb.RangeRequest_KEY, 0, all, false},
		{"descend key", pb.RangeRequest_DESCEND, pb.RangeRequest_KEY, 0,
			[]string{"\xff", "c", "b", "a\x00", "a", "\x00"}, false},
		{"descend key limit", pb.RangeRequest_DESCEND, pb.RangeRequest_KEY, 2, []string{"\xff", "c"}, true},
		{"ascend key limit", pb.RangeRequest_ASCEND, pb.RangeRequest_KEY, 2, []string{"\x00", "a"}, true},
		// versions: \x00 1, a 3, a\x00 1, b 1, c 1, \xff 1 (ties keep key order)
		{"ascend version", pb.RangeRequest_ASCEND, pb.RangeRequest_VERSION, 0,
			[]string{"\x00", "a\x00", "b", "c", "\xff", "a"}, false},
		{"descend version", pb.RangeRequest_DESCEND, pb.RangeRequest_VERSION, 0,
			[]string{"a", "\x00", "a\x00", "b", "c", "\xff"}, false},
		{"none version means ascend", pb.RangeRequest_NONE, pb.RangeRequest_VERSION, 0,
			[]string{"\x00", "a\x00", "b", "c", "\xff", "a"}, false},
		// creates: \x00 5, a 1, a\x00 2, b 7, c 9, \xff 3
		{"ascend create", pb.RangeRequest_ASCEND, pb.RangeRequest_CREATE, 0,
			[]string{"a", "a\x00", "\xff", "\x00", "b", "c"}, false},
		{"descend create", pb.RangeRequest_DESCEND, pb.RangeRequest_CREATE, 0,
			[]string{"c", "b", "\x00", "\xff", "a\x00", "a"}, false},
		{"ascend create limit", pb.RangeRequest_ASCEND, pb.RangeRequest_CREATE, 3,
			[]string{"a", "a\x00", "\xff"}, true},
		// mods: \x00 5, a 8, a\x00 2, b 7, c 9, \xff 3
		{"ascend mod", pb.RangeRequest_ASCEND, pb.RangeRequest_MOD, 0,
			[]string{"a\x00", "\xff", "\x00", "b", "a", "c"}, false},
		{"descend mod", pb.RangeRequest_DESCEND, pb.RangeRequest_MOD, 0,
			[]string{"c", "a", "b", "\x00", "\xff", "a\x00"}, false},
		{"descend mod limit", pb.RangeRequest_DESCEND, pb.RangeRequest_MOD, 2, []string{"c", "a"}, true},
		// values: \x00 n, a 3, a\x00 1, b 2, c 1, \xff 0
		{"ascend value", pb.RangeRequest_ASCEND, pb.RangeRequest_VALUE, 0,
			[]string{"\xff", "a\x00", "c", "b", "a", "\x00"}, false},
		{"descend value", pb.RangeRequest_DESCEND, pb.RangeRequest_VALUE, 0,
			[]string{"\x00", "a", "b", "a\x00", "c", "\xff"}, false},
		{"limit equals count", pb.RangeRequest_DESCEND, pb.RangeRequest_VALUE, 6,
			[]string{"\x00", "a", "b", "a\x00", "c", "\xff"}, false},
		// etcd applies the limit (plus one) in key order before a NONE sort
		// on another target: among \x00 a a\x00 (mods 5 8 2), ascending mod
		// gives a\x00 \x00, and more is set.
		{"none mod limit sorts the first keys only", pb.RangeRequest_NONE, pb.RangeRequest_MOD, 2,
			[]string{"a\x00", "\x00"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.mustRange(&pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"),
				SortOrder: tt.order, SortTarget: tt.target, Limit: tt.limit})
			if got := keysOf(resp.Kvs); !slices.Equal(got, tt.want) {
				t.Errorf("keys: got %q, want %q", got, tt.want)
			}
			if resp.More != tt.more {
				t.Errorf("more: got %v, want %v", resp.More, tt.more)
			}
			if resp.Count != 6 {
				t.Errorf("count: got %d, want 6", resp.Count)
			}
		})
	}
}

func TestRangeInvalidSort(t *testing.T) {
	e := rangeEnv(t)
	_, err := e.rangeReq(&pb.RangeRequest{Key: []byte("a"), SortTarget: 42})
	wantErr(t, "range", err, rpctypes.ErrGRPCInvalidSortOption)
}

func TestRangeFilters(t *testing.T) {
	e := rangeEnv(t)
	tests := []struct {
		name string
		req  *pb.RangeRequest
		want []string
		more bool
	}{
		{"min mod", &pb.RangeRequest{MinModRevision: 7}, []string{"a", "b", "c"}, false},
		{"max mod", &pb.RangeRequest{MaxModRevision: 3}, []string{"a\x00", "\xff"}, false},
		{"mod window", &pb.RangeRequest{MinModRevision: 3, MaxModRevision: 7}, []string{"\x00", "b", "\xff"}, false},
		{"min create", &pb.RangeRequest{MinCreateRevision: 5}, []string{"\x00", "b", "c"}, false},
		{"max create", &pb.RangeRequest{MaxCreateRevision: 2}, []string{"a", "a\x00"}, false},
		{"create window", &pb.RangeRequest{MinCreateRevision: 2, MaxCreateRevision: 5},
			[]string{"\x00", "a\x00", "\xff"}, false},
		{"bounds are inclusive", &pb.RangeRequest{MinModRevision: 8, MaxModRevision: 8}, []string{"a"}, false},
		{"filter then limit", &pb.RangeRequest{MinModRevision: 3, Limit: 2}, []string{"\x00", "a"}, true},
		{"filter limit not exceeded", &pb.RangeRequest{MinModRevision: 8, Limit: 2}, []string{"a", "c"}, false},
		{"filter sort limit", &pb.RangeRequest{MinCreateRevision: 2, SortOrder: pb.RangeRequest_DESCEND,
			SortTarget: pb.RangeRequest_CREATE, Limit: 2}, []string{"c", "b"}, true},
		{"filter descend key", &pb.RangeRequest{MaxCreateRevision: 3, SortOrder: pb.RangeRequest_DESCEND},
			[]string{"\xff", "a\x00", "a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Key, tt.req.RangeEnd = []byte("\x00"), []byte("\x00")
			resp := e.mustRange(tt.req)
			if got := keysOf(resp.Kvs); !slices.Equal(got, tt.want) {
				t.Errorf("keys: got %q, want %q", got, tt.want)
			}
			if resp.More != tt.more {
				t.Errorf("more: got %v, want %v", resp.More, tt.more)
			}
			if resp.Count != 6 {
				t.Errorf("count ignores filters: got %d, want 6", resp.Count)
			}
		})
	}
}

func TestRangeLimitCountKeysOnly(t *testing.T) {
	e := rangeEnv(t)
	tests := []struct {
		name  string
		req   *pb.RangeRequest
		want  string
		count int64
		more  bool
	}{
		{"limit", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("\x00"), Limit: 2},
			`["a"="3" "a\x00"="1"]`, 5, true},
		{"limit exact", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("\x00"), Limit: 5},
			`["a"="3" "a\x00"="1" "b"="2" "c"="1" "\xff"="0"]`, 5, false},
		{"negative limit is none", &pb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("\x00"), Limit: -1},
			`["b"="2" "c"="1" "\xff"="0"]`, 3, false},
		{"keys only", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), KeysOnly: true},
			`["a" "a\x00"]`, 2, false},
		{"keys only sorted by value", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), KeysOnly: true,
			SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_VALUE}, `["a\x00" "a"]`, 2, false},
		{"count only", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("\x00"), CountOnly: true, Limit: 1},
			`[]`, 5, false},
		{"count only at old revision", &pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"),
			CountOnly: true, Revision: 6}, `[]`, 4, false},
		{"count ignores limit", &pb.RangeRequest{Key: []byte("\x00"), RangeEnd: []byte("\x00"), Limit: 1,
			SortOrder: pb.RangeRequest_DESCEND}, `["\xff"="0"]`, 6, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.mustRange(tt.req)
			if got := kvsString(resp.Kvs); got != tt.want {
				t.Errorf("kvs: got %s, want %s", got, tt.want)
			}
			if resp.Count != tt.count {
				t.Errorf("count: got %d, want %d", resp.Count, tt.count)
			}
			if resp.More != tt.more {
				t.Errorf("more: got %v, want %v", resp.More, tt.more)
			}
		})
	}
}
