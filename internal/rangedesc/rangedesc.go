package rangedesc

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/synod-io/synod/internal/keys"
)

// Descriptor describes one data range.
type Descriptor struct {
	RangeID keys.RangeID
	// Start and End bound the range's user keys, [Start, End); an empty
	// End is the end of the keyspace.
	Start, End []byte
	// Generation counts the changes of the range's span.
	Generation uint64
}

// Contains reports whether key lies in d's span.
func (d Descriptor) Contains(key []byte) bool {
	return bytes.Compare(key, d.Start) >= 0 && (len(d.End) == 0 || bytes.Compare(key, d.End) < 0)
}

func (d Descriptor) String() string {
	end := "end"
	if len(d.End) > 0 {
		end = fmt.Sprintf("%q", d.End)
	}
	return fmt.Sprintf("range %d [%q, %s) generation %d", d.RangeID, d.Start, end, d.Generation)
}

// Initial is the descriptors of a new cluster: the first data range over
// the whole keyspace.
func Initial() []Descriptor {
	return []Descriptor{{RangeID: keys.FirstDataRangeID, Generation: 1}}
}

// Split returns the descriptors of data ranges over the spans between
// splits (sorted and distinct user keys): the first data range below the
// first split, then one range per span, IDs in key order.
func Split(splits [][]byte) []Descriptor {
	out := []Descriptor{{RangeID: keys.FirstDataRangeID, Generation: 1}}
	for i, k := range splits {
		out[i].End = bytes.Clone(k)
		out = append(out, Descriptor{RangeID: keys.FirstDataRangeID + keys.RangeID(i+1), Start: bytes.Clone(k), Generation: 1})
	}
	return out
}

// Encoding: protobuf wire format, 1 range ID, 2 start, 3 end, 4
// generation.
const (
	fieldID         = 1
	fieldStart      = 2
	fieldEnd        = 3
	fieldGeneration = 4
)

// Encode returns d's stored form.
func (d Descriptor) Encode() []byte {
	b := protowire.AppendTag(nil, fieldID, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(d.RangeID))
	b = protowire.AppendTag(b, fieldStart, protowire.BytesType)
	b = protowire.AppendBytes(b, d.Start)
	b = protowire.AppendTag(b, fieldEnd, protowire.BytesType)
	b = protowire.AppendBytes(b, d.End)
	b = protowire.AppendTag(b, fieldGeneration, protowire.VarintType)
	return protowire.AppendVarint(b, d.Generation)
}

// Decode parses a stored descriptor. The result owns its bytes.
func Decode(data []byte) (Descriptor, error) {
	var d Descriptor
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return d, fmt.Errorf("decode range descriptor: %w", protowire.ParseError(n))
		}
		data = data[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldID || num == fieldGeneration):
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return d, fmt.Errorf("decode range descriptor: %w", protowire.ParseError(n))
			}
			data = data[n:]
			if num == fieldID {
				d.RangeID = keys.RangeID(v)
			} else {
				d.Generation = v
			}
		case typ == protowire.BytesType && (num == fieldStart || num == fieldEnd):
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return d, fmt.Errorf("decode range descriptor: %w", protowire.ParseError(n))
			}
			data = data[n:]
			if num == fieldStart {
				d.Start = bytes.Clone(v)
			} else {
				d.End = bytes.Clone(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return d, fmt.Errorf("decode range descriptor: %w", protowire.ParseError(n))
			}
			data = data[n:]
		}
	}
	if d.RangeID == 0 {
		return d, errors.New("decode range descriptor: no range ID")
	}
	return d, nil
}

// Put writes d into w (the system range's keyspace).
func Put(w pebble.Writer, d Descriptor) error {
	if err := w.Set(keys.RangeDescKey(d.RangeID), d.Encode(), nil); err != nil {
		return fmt.Errorf("write descriptor of range %d: %w", d.RangeID, err)
	}
	return nil
}

// Load reads the stored descriptors, in range ID order; none means Initial
// (a data dir written before descriptors existed).
func Load(r pebble.Reader) ([]Descriptor, error) {
	span := keys.RangeDescSpan()
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return nil, fmt.Errorf("read range descriptors: %w", err)
	}
	defer it.Close()
	var out []Descriptor
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("read range descriptor: %w", err)
		}
		d, err := Decode(v)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read range descriptors: %w", err)
	}
	if len(out) == 0 {
		return Initial(), nil
	}
	return out, nil
}

// Set is an immutable set of descriptors covering the keyspace, in key
// order. Safe for concurrent use.
type Set struct {
	descs []Descriptor
}

// NewSet checks that ds cover the keyspace, each key once, and returns
// them as a Set.
func NewSet(ds []Descriptor) (*Set, error) {
	if len(ds) == 0 {
		return nil, errors.New("range descriptors: none")
	}
	sorted := slices.Clone(ds)
	slices.SortFunc(sorted, func(a, b Descriptor) int { return bytes.Compare(a.Start, b.Start) })
	ids := map[keys.RangeID]bool{}
	for i, d := range sorted {
		if ids[d.RangeID] {
			return nil, fmt.Errorf("range descriptors: range %d twice", d.RangeID)
		}
		ids[d.RangeID] = true
		switch {
		case i == 0 && len(d.Start) != 0:
			return nil, fmt.Errorf("range descriptors: no range holds the keys below %q", d.Start)
		case i > 0 && !bytes.Equal(sorted[i-1].End, d.Start):
			return nil, fmt.Errorf("range descriptors: %v does not end where %v begins", sorted[i-1], d)
		case len(d.End) != 0 && bytes.Compare(d.Start, d.End) >= 0:
			return nil, fmt.Errorf("range descriptors: %v is empty", d)
		case i < len(sorted)-1 && len(d.End) == 0:
			return nil, fmt.Errorf("range descriptors: %v and %v overlap", d, sorted[i+1])
		case i == len(sorted)-1 && len(d.End) != 0:
			return nil, fmt.Errorf("range descriptors: no range holds the keys from %q on", d.End)
		}
	}
	return &Set{descs: sorted}, nil
}

// All returns the descriptors in key order. The caller must not modify
// them.
func (s *Set) All() []Descriptor { return s.descs }

// IDs returns the range IDs in key order.
func (s *Set) IDs() []keys.RangeID {
	out := make([]keys.RangeID, len(s.descs))
	for i, d := range s.descs {
		out[i] = d.RangeID
	}
	return out
}

// Lookup returns the descriptor of the range holding key.
func (s *Set) Lookup(key []byte) Descriptor {
	// The last range whose start is at or below key.
	i, found := slices.BinarySearchFunc(s.descs, key, func(d Descriptor, k []byte) int { return bytes.Compare(d.Start, k) })
	if !found {
		i--
	}
	return s.descs[i]
}

// Overlapping returns the descriptors of the ranges holding keys of an
// etcd key range: key alone when end is empty, every key from key on when
// end is "\x00", and [key, end) otherwise (empty when end <= key).
func (s *Set) Overlapping(key, end []byte) []Descriptor {
	switch {
	case len(end) == 0:
		return []Descriptor{s.Lookup(key)}
	case len(end) == 1 && end[0] == 0:
		end = nil
	case bytes.Compare(end, key) <= 0:
		return nil
	}
	var out []Descriptor
	for i := slices.IndexFunc(s.descs, func(d Descriptor) bool { return d.Contains(key) }); i < len(s.descs); i++ {
		d := s.descs[i]
		if end != nil && bytes.Compare(d.Start, end) >= 0 {
			break
		}
		out = append(out, d)
	}
	return out
}

// PutLocal writes d as its range's own descriptor (keys.RangeDescriptorKey),
// in the range's replicated range-local keys.
func PutLocal(w pebble.Writer, d Descriptor) error {
	if err := w.Set(keys.RangeDescriptorKey(d.RangeID), d.Encode(), nil); err != nil {
		return fmt.Errorf("write own descriptor of range %d: %w", d.RangeID, err)
	}
	return nil
}

// GetLocal reads range id's own descriptor; ok is false when the range
// has none (it never split, or its state is not here).
func GetLocal(r pebble.Reader, id keys.RangeID) (d Descriptor, ok bool, err error) {
	v, closer, err := r.Get(keys.RangeDescriptorKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return Descriptor{}, false, nil
	}
	if err != nil {
		return Descriptor{}, false, fmt.Errorf("read own descriptor of range %d: %w", id, err)
	}
	defer closer.Close()
	d, err = Decode(v)
	if err != nil {
		return Descriptor{}, false, err
	}
	return d, true, nil
}

// LoadLocal reads the own descriptors of every range with state on this
// node, in range ID order.
func LoadLocal(r pebble.Reader) ([]Descriptor, error) {
	span := keys.ReplicatedRangeLocalSpan()
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
	if err != nil {
		return nil, fmt.Errorf("read own range descriptors: %w", err)
	}
	defer it.Close()
	var out []Descriptor
	for ok := it.First(); ok; {
		id, isRange := keys.ReplicatedRangeIDOf(it.Key())
		if !isRange {
			ok = it.Next()
			continue
		}
		d, found, err := GetLocal(r, id)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, d)
		}
		// On to the next range's keys.
		ok = it.SeekGE(keys.RangeLocalReplicatedSpan(id).End)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read own range descriptors: %w", err)
	}
	return out, nil
}

// Newest merges descriptor lists: for each range ID, the descriptor of
// the highest generation (the later list wins a tie).
func Newest(lists ...[]Descriptor) []Descriptor {
	byID := map[keys.RangeID]Descriptor{}
	var order []keys.RangeID
	for _, l := range lists {
		for _, d := range l {
			cur, ok := byID[d.RangeID]
			if !ok {
				order = append(order, d.RangeID)
			}
			if !ok || d.Generation >= cur.Generation {
				byID[d.RangeID] = d
			}
		}
	}
	slices.Sort(order)
	out := make([]Descriptor, len(order))
	for i, id := range order {
		out[i] = byID[id]
	}
	return out
}

// With returns the set with ds in place of the descriptors of the same
// ranges, and added where their ranges are new.
func (s *Set) With(ds ...Descriptor) (*Set, error) {
	return NewSet(Newest(s.descs, ds))
}

// Get returns the descriptor of range id, if the set holds it.
func (s *Set) Get(id keys.RangeID) (Descriptor, bool) {
	for _, d := range s.descs {
		if d.RangeID == id {
			return d, true
		}
	}
	return Descriptor{}, false
}

// SplitCommand splits a data range at Key: the range keeps the keys
// below it, and a new range, NewID, takes the rest. It applies only to
// the range at generation Generation.
type SplitCommand struct {
	Key        []byte
	NewID      keys.RangeID
	Generation uint64
}

// Encoding of SplitCommand: 1 key, 2 new range ID, 3 generation.
const (
	splitFieldKey        = 1
	splitFieldNewID      = 2
	splitFieldGeneration = 3
)

// Encode returns c's form in a log entry.
func (c SplitCommand) Encode() []byte {
	b := protowire.AppendTag(nil, splitFieldKey, protowire.BytesType)
	b = protowire.AppendBytes(b, c.Key)
	b = protowire.AppendTag(b, splitFieldNewID, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(c.NewID))
	b = protowire.AppendTag(b, splitFieldGeneration, protowire.VarintType)
	return protowire.AppendVarint(b, c.Generation)
}

// DecodeSplitCommand parses a split command.
func DecodeSplitCommand(data []byte) (SplitCommand, error) {
	var c SplitCommand
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return c, fmt.Errorf("decode split: %w", protowire.ParseError(n))
		}
		data = data[n:]
		switch {
		case typ == protowire.BytesType && num == splitFieldKey:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return c, fmt.Errorf("decode split: %w", protowire.ParseError(n))
			}
			c.Key, data = bytes.Clone(v), data[n:]
		case typ == protowire.VarintType && (num == splitFieldNewID || num == splitFieldGeneration):
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return c, fmt.Errorf("decode split: %w", protowire.ParseError(n))
			}
			data = data[n:]
			if num == splitFieldNewID {
				c.NewID = keys.RangeID(v)
			} else {
				c.Generation = v
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return c, fmt.Errorf("decode split: %w", protowire.ParseError(n))
			}
			data = data[n:]
		}
	}
	if len(c.Key) == 0 || c.NewID == 0 {
		return c, errors.New("decode split: no key or no new range ID")
	}
	return c, nil
}

// EncodeList returns the stored form of several descriptors (a system
// command's payload): each as a length-prefixed field 1.
func EncodeList(ds []Descriptor) []byte {
	var b []byte
	for _, d := range ds {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, d.Encode())
	}
	return b
}

// DecodeList parses EncodeList's form.
func DecodeList(data []byte) ([]Descriptor, error) {
	var out []Descriptor
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return nil, errors.New("decode range descriptors: malformed list")
		}
		v, m := protowire.ConsumeBytes(data[n:])
		if m < 0 {
			return nil, fmt.Errorf("decode range descriptors: %w", protowire.ParseError(m))
		}
		d, err := Decode(v)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		data = data[n+m:]
	}
	return out, nil
}

// Get reads the meta descriptor of range id in the system range's
// keyspace; ok is false when there is none.
func Get(r pebble.Reader, id keys.RangeID) (d Descriptor, ok bool, err error) {
	v, closer, err := r.Get(keys.RangeDescKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return Descriptor{}, false, nil
	}
	if err != nil {
		return Descriptor{}, false, fmt.Errorf("read descriptor of range %d: %w", id, err)
	}
	defer closer.Close()
	d, err = Decode(v)
	return d, err == nil, err
}

// Overlaps reports whether d and o share a key.
func (d Descriptor) Overlaps(o Descriptor) bool {
	return (len(o.End) == 0 || bytes.Compare(d.Start, o.End) < 0) && (len(d.End) == 0 || bytes.Compare(o.Start, d.End) < 0)
}
