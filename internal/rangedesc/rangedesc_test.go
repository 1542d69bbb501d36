package rangedesc

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/keys"
)

func threeRanges(t *testing.T) *Set {
	t.Helper()
	s, err := NewSet([]Descriptor{
		{RangeID: 4, Start: []byte("m"), Generation: 1},
		{RangeID: 2, End: []byte("c"), Generation: 1},
		{RangeID: 3, Start: []byte("c"), End: []byte("m"), Generation: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ids(ds []Descriptor) []keys.RangeID {
	var out []keys.RangeID
	for _, d := range ds {
		out = append(out, d.RangeID)
	}
	return out
}

func TestRouting(t *testing.T) {
	s := threeRanges(t)
	if got, want := s.IDs(), []keys.RangeID{2, 3, 4}; !slices.Equal(got, want) {
		t.Fatalf("ranges in key order: got %v, want %v", got, want)
	}
	for _, tc := range []struct {
		key  string
		want keys.RangeID
	}{{"", 2}, {"a", 2}, {"bzzz", 2}, {"c", 3}, {"c\x00", 3}, {"lzz", 3}, {"m", 4}, {"\xff\xff", 4}} {
		if got := s.Lookup([]byte(tc.key)).RangeID; got != tc.want {
			t.Errorf("Lookup(%q): got range %d, want %d", tc.key, got, tc.want)
		}
	}
	for _, tc := range []struct {
		key, end string
		want     []keys.RangeID
	}{
		{"a", "", []keys.RangeID{2}},
		{"c", "", []keys.RangeID{3}},
		{"a", "c", []keys.RangeID{2}},         // end is exclusive
		{"a", "c\x00", []keys.RangeID{2, 3}},  // c itself is range 3's
		{"b", "n", []keys.RangeID{2, 3, 4}},   // across all three
		{"d", "\x00", []keys.RangeID{3, 4}},   // from d on
		{"", "\x00", []keys.RangeID{2, 3, 4}}, // every key
		{"m", "\xff", []keys.RangeID{4}},      // the last range
		{"x", "a", nil},                       // empty span
		{"c", "m", []keys.RangeID{3}},         // exactly one range
		{"l", "m\x00", []keys.RangeID{3, 4}},  // one key over the edge
		{"\x01synod/", "\x01synod0", []keys.RangeID{2}},
	} {
		if got := ids(s.Overlapping([]byte(tc.key), []byte(tc.end))); !slices.Equal(got, tc.want) {
			t.Errorf("Overlapping(%q, %q): got %v, want %v", tc.key, tc.end, got, tc.want)
		}
	}
}

func TestNewSetRefusesGapsAndOverlaps(t *testing.T) {
	for _, ds := range [][]Descriptor{
		nil,
		{{RangeID: 2, Start: []byte("a")}}, // keys below a
		{{RangeID: 2, End: []byte("c")}},   // keys from c on
		{{RangeID: 2, End: []byte("c")}, {RangeID: 3, Start: []byte("d")}},                // gap
		{{RangeID: 2, End: []byte("d")}, {RangeID: 3, Start: []byte("c")}},                // overlap
		{{RangeID: 2, End: []byte("c")}, {RangeID: 2, Start: []byte("c")}},                // one ID twice
		{{RangeID: 2, End: []byte("")}, {RangeID: 3, Start: []byte(""), End: []byte("")}}, // two over everything
	} {
		if _, err := NewSet(ds); err == nil {
			t.Errorf("NewSet(%v): got no error", ds)
		}
	}
}

func TestStoredDescriptors(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := Load(db)
	if err != nil || !equal(got, Initial()) {
		t.Fatalf("descriptors of a store without any: got %v %v, want %v", got, err, Initial())
	}
	want := threeRanges(t).All()
	b := db.NewBatch()
	for _, d := range want {
		if err := Put(b, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	got, err = Load(db)
	if err != nil || !equal(got, want) { // range ID order is key order here
		t.Fatalf("stored descriptors: got %v %v, want %v", got, err, want)
	}
	if _, err := Decode([]byte{0xff}); err == nil {
		t.Fatal("decoding garbage: got no error")
	}
}

func equal(a, b []Descriptor) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestOwnDescriptorsAndSplits: the ranges' own descriptors, stored among
// other range-local keys, load by range; Newest keeps each range's highest
// generation; a set takes a split's two sides; split commands and lists
// of descriptors survive their encoding.
func TestOwnDescriptorsAndSplits(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	own := []Descriptor{
		{RangeID: 2, End: []byte("c"), Generation: 2},
		{RangeID: 7, Start: []byte("c"), End: []byte("m"), Generation: 1},
	}
	b := db.NewBatch()
	for _, d := range own {
		if err := PutLocal(b, d); err != nil {
			t.Fatal(err)
		}
		// Other range-local keys around it.
		if err := b.Set(keys.RangeAppliedStateKey(d.RangeID), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		if err := b.Set(keys.TxnLocksKey(d.RangeID, 9), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Set(keys.RangeAppliedStateKey(5), []byte("x"), nil); err != nil { // a range with no own descriptor
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	got, err := LoadLocal(db)
	if err != nil || !equal(got, own) {
		t.Fatalf("own descriptors: got %v %v, want %v", got, err, own)
	}
	if _, ok, err := GetLocal(db, 5); ok || err != nil {
		t.Fatalf("own descriptor of range 5: got one (%v), want none", err)
	}

	meta := []Descriptor{{RangeID: 2, End: []byte("m"), Generation: 1}, {RangeID: 4, Start: []byte("m"), Generation: 1}}
	newest := Newest(meta, own)
	want := []Descriptor{own[0], meta[1], own[1]}
	if !equal(newest, []Descriptor{own[0], meta[1], own[1]}) {
		t.Fatalf("newest: got %v, want %v", newest, want)
	}
	set, err := NewSet(meta)
	if err != nil {
		t.Fatal(err)
	}
	split, err := set.With(own...)
	if err != nil || !equal(split.All(), []Descriptor{own[0], own[1], meta[1]}) {
		t.Fatalf("set with a split: got %v %v", split, err)
	}
	if _, err := set.With(Descriptor{RangeID: 9, Start: []byte("e"), End: []byte("f"), Generation: 1}); err == nil {
		t.Fatal("a set with an overlapping range: got no error")
	}
	if !own[0].Overlaps(meta[0]) || own[0].Overlaps(own[1]) || !meta[1].Overlaps(Descriptor{Start: []byte("z")}) {
		t.Fatal("Overlaps: wrong answer")
	}

	list, err := DecodeList(EncodeList(newest))
	if err != nil || !equal(list, newest) {
		t.Fatalf("descriptor list: got %v %v, want %v", list, err, newest)
	}
	cmd := SplitCommand{Key: []byte("k"), NewID: 12, Generation: 3}
	if got, err := DecodeSplitCommand(cmd.Encode()); err != nil || fmt.Sprint(got) != fmt.Sprint(cmd) {
		t.Fatalf("split command: got %v %v, want %v", got, err, cmd)
	}
	if _, err := DecodeSplitCommand(SplitCommand{NewID: 3}.Encode()); err == nil {
		t.Fatal("a split command with no key: got no error")
	}
}
