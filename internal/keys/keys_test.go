package keys

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func randKey(r *rand.Rand) []byte {
	alphabet := []byte{0x00, 0x01, 0x02, 'a', 'b', 0xfe, 0xff}
	k := make([]byte, 1+r.IntN(4))
	for i := range k {
		k[i] = alphabet[r.IntN(len(alphabet))]
	}
	return k
}

func TestMVCCKeyOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		a, b := randKey(r), randKey(r)
		ra, rb := r.Int64N(1<<40)+1, r.Int64N(1<<40)+1
		ka, kb := MVCCKey(a, ra), MVCCKey(b, rb)
		got := bytes.Compare(ka, kb)
		want := bytes.Compare(a, b)
		if want == 0 {
			// Same user key: newer revisions sort first.
			switch {
			case ra > rb:
				want = -1
			case ra < rb:
				want = 1
			}
		}
		if got != want {
			t.Fatalf("compare(%q@%d, %q@%d): got %d, want %d", a, ra, b, rb, got, want)
		}
		// Bounds: every version of a lies in [MVCCBound(a), MVCCKeyUpperBound(a)).
		if bytes.Compare(ka, MVCCBound(a)) < 0 || bytes.Compare(ka, MVCCKeyUpperBound(a)) >= 0 {
			t.Fatalf("%q@%d outside its own bounds", a, ra)
		}
		// A version of b lies below MVCCBound(a) exactly when b < a.
		if (bytes.Compare(kb, MVCCBound(a)) < 0) != (bytes.Compare(b, a) < 0) {
			t.Fatalf("%q@%d vs bound of %q: wrong side", b, rb, a)
		}
		// Upper bound of a lies below every version of a larger key.
		if bytes.Compare(b, a) > 0 && bytes.Compare(kb, MVCCKeyUpperBound(a)) < 0 {
			t.Fatalf("%q@%d sorts below upper bound of %q", b, rb, a)
		}
	}
}

func TestDecodeMVCCKey(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 5000; i++ {
		k := randKey(r)
		rev := r.Int64N(1 << 62)
		gotKey, gotRev, err := DecodeMVCCKey(nil, MVCCKey(k, rev))
		if err != nil {
			t.Fatalf("decode %q@%d: %v", k, rev, err)
		}
		if !bytes.Equal(gotKey, k) || gotRev != rev {
			t.Fatalf("decode: got %q@%d, want %q@%d", gotKey, gotRev, k, rev)
		}
	}
	for _, bad := range [][]byte{nil, {mvccPrefix}, MVCCBound([]byte("a")), append([]byte{0x02}, MVCCKey([]byte("a"), 1)[1:]...)} {
		if _, _, err := DecodeMVCCKey(nil, bad); err == nil {
			t.Errorf("decode %q: got no error, want one", bad)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want []byte }{
		{[]byte("a"), []byte("b")},
		{[]byte("a\xff"), []byte("b")},
		{[]byte{0xff, 0xff}, nil},
		{nil, nil},
	} {
		if got := PrefixEnd(tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("PrefixEnd(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSpansDisjoint checks that the ranges' replicated spans and their
// unreplicated ones never overlap: a snapshot of one range must not carry,
// nor its install delete, another's state or a log.
func TestSpansDisjoint(t *testing.T) {
	var spans []Span
	for _, id := range []RangeID{SystemRangeID, FirstDataRangeID} {
		spans = append(spans, ReplicatedSpans(id)...)
		spans = append(spans, RangeLocalUnreplicatedSpan(id))
	}
	for i, a := range spans {
		for j, b := range spans {
			if i != j && bytes.Compare(a.Start, b.End) < 0 && bytes.Compare(b.Start, a.End) < 0 {
				t.Fatalf("spans %d and %d overlap: %q-%q and %q-%q", i, j, a.Start, a.End, b.Start, b.End)
			}
		}
	}
	for _, k := range [][]byte{RaftHardStateKey(1), RaftTruncatedStateKey(1), RaftLogKey(1, 7)} {
		s := RangeLocalUnreplicatedSpan(1)
		if bytes.Compare(k, s.Start) < 0 || bytes.Compare(k, s.End) >= 0 {
			t.Fatalf("%q outside the unreplicated span", k)
		}
	}
}

// TestNodeKeysAreNotReplicated checks that the node-local keys, the peer
// secret above all, lie outside every span a snapshot or backup copies.
func TestNodeKeysAreNotReplicated(t *testing.T) {
	for _, k := range [][]byte{NodeIdentKey(), NodeRemovedKey(), NodePeerSecretKey(), NodeLayoutKey(), NodeDataLostKey()} {
		for _, s := range append(ReplicatedSpans(SystemRangeID), ReplicatedSpans(FirstDataRangeID)...) {
			if bytes.Compare(k, s.Start) >= 0 && bytes.Compare(k, s.End) < 0 {
				t.Fatalf("node-local key %q inside the replicated span %q-%q", k, s.Start, s.End)
			}
		}
	}
}

func TestIntersectsReserved(t *testing.T) {
	for _, tc := range []struct {
		key, end string
		want     bool
	}{
		{"\x01synod/queue/q/job/1", "", true},
		{"\x01synod", "", false},
		{"synod/queues/q", "", false},
		{"\x00", "\x00", true},         // every key
		{"", "\x00", true},             // every key
		{"\x02", "\x00", false},        // every key from \x02
		{"\x00a", "\x01synod/", false}, // ends where it starts
		{"\x00a", "\x01synod/a", true},
		{"\x01synod0", "\x01", false}, // starts past it
		{"\x01synod/zz", "\x01synod/zzz", true},
	} {
		var end []byte
		if tc.end != "" {
			end = []byte(tc.end)
		}
		if got := IntersectsReserved([]byte(tc.key), end); got != tc.want {
			t.Errorf("IntersectsReserved(%q, %q): got %v, want %v", tc.key, tc.end, got, tc.want)
		}
	}
}

// TestRangesHoldTheirKeys checks which range's snapshot carries which keys.
func TestRangesHoldTheirKeys(t *testing.T) {
	in := func(k []byte, id RangeID) bool {
		for _, s := range ReplicatedSpans(id) {
			if bytes.Compare(k, s.Start) >= 0 && bytes.Compare(k, s.End) < 0 {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		key []byte
		id  RangeID
	}{
		{MemberKey(7), SystemRangeID},
		{RemovedMemberKey(7), SystemRangeID},
		{AlarmKey(7, 1), SystemRangeID},
		{AuthUserKey("u"), SystemRangeID},
		{AuthRevisionKey(), SystemRangeID},
		{OracleCeilingKey(), SystemRangeID},
		{RangeAppliedStateKey(SystemRangeID), SystemRangeID},
		{LeaseKey(7), FirstDataRangeID},
		{LeaseAttachmentKey(7, []byte("k")), FirstDataRangeID},
		{MVCCKey([]byte("k"), 3), FirstDataRangeID},
		{RangeAppliedStateKey(FirstDataRangeID), FirstDataRangeID},
		{RangeSystemStateKey(FirstDataRangeID), FirstDataRangeID},
	} {
		other := SystemRangeID
		if c.id == SystemRangeID {
			other = FirstDataRangeID
		}
		if !in(c.key, c.id) || in(c.key, other) {
			t.Errorf("%q: in range %d %v, in range %d %v; want only in range %d", c.key, c.id, in(c.key, c.id), other, in(c.key, other), c.id)
		}
	}
}
