package keys

import (
	"bytes"
	"testing"
)

func TestOverlapsReserved(t *testing.T) {
	cases := []struct {
		key, end string
		want     bool
	}{
		{"\x01synod/limit/a/def", "", true},
		{"\x01synod/", "", true},
		{"\x01synod", "", false},
		{"synod/limit/a", "", false},
		{"a", "", false},
		{"\x00", "\x00", true},        // every key
		{"a", "\x00", false},          // from "a" on
		{"\x01", "\x00", true},        // from 0x01 on
		{"\x01synod0", "\x00", false}, // past the reserved keys
		{"\x00", "\x01", false},
		{"\x00", "\x01synod/", false},
		{"\x00", "\x01synod/a", true},
		{"\x01synod/limit/", "\x01synod/limit0", true},
		{"\x01synod0", "\x02", false},
		{"\x01synod/\xff", "\x02", true},
	}
	for _, c := range cases {
		if got := OverlapsReserved([]byte(c.key), []byte(c.end)); got != c.want {
			t.Errorf("OverlapsReserved(%q, %q): got %v, want %v", c.key, c.end, got, c.want)
		}
	}
}

func TestServiceStateKeys(t *testing.T) {
	keys := [][]byte{[]byte("\x01synod/limit/a/state/"), []byte("\x01synod/limit/a/state/x\x00y"), []byte("\x01synod/limit/a/state/x"), []byte("\x01synod/limit/b/state/\x00")}
	prefix := ServiceStatePrefix([]byte("\x01synod/limit/a/"))
	span := ServiceStateSpan()
	for _, k := range keys {
		sk := ServiceStateKey(k)
		got, err := DecodeServiceStateKey(sk)
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("decode(encode(%q)): got %q, %v", k, got, err)
		}
		if bytes.Compare(sk, span.Start) < 0 || bytes.Compare(sk, span.End) >= 0 {
			t.Fatalf("%q outside the service state span", k)
		}
		if in := bytes.HasPrefix(sk, prefix); in != bytes.HasPrefix(k, []byte("\x01synod/limit/a/")) {
			t.Fatalf("%q: under the prefix of limit a: got %v", k, in)
		}
	}
	// Sorted as the user keys are.
	if bytes.Compare(ServiceStateKey(keys[2]), ServiceStateKey(keys[1])) >= 0 {
		t.Fatalf("state keys do not sort as their user keys")
	}
}
