package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/keys"
)

// ErrCorrupt is wrapped by every error reporting a malformed stored version.
var ErrCorrupt = errors.New("corrupt mvcc value")

const (
	flagTombstone byte = 1 << 0
	knownFlags         = flagTombstone
)

// record is the decoded Pebble value of one version. value aliases the
// buffer it was decoded from.
type record struct {
	tombstone bool
	sub       int32
	createRev int64
	version   int64
	lease     int64
	value     []byte
}

// maxRecordHeader bounds the bytes appendRecord writes before the value.
const maxRecordHeader = 1 + 4*binary.MaxVarintLen64

// encodeVersion encodes, in one buffer, the Pebble key and value of r as the
// version of userKey at rev. It returns them, and the version's KeyValue,
// whose Value aliases the buffer; its Key is a copy of its own, since an
// index of live keys may keep it long after the value is gone. Two
// allocations where four were.
func encodeVersion(userKey []byte, rev int64, r record) (pk, pv []byte, kv *mvccpb.KeyValue) {
	// The Pebble key: a prefix byte, userKey with each zero byte escaped
	// into two, a two-byte terminator and the 8-byte revision.
	buf := make([]byte, 0, 1+2*len(userKey)+2+8+maxRecordHeader+len(r.value))
	buf = keys.AppendMVCCKey(buf, userKey, rev)
	k := len(buf)
	buf = appendRecord(buf, r)
	kv = &mvccpb.KeyValue{
		Key:            bytes.Clone(userKey),
		CreateRevision: r.createRev,
		ModRevision:    rev,
		Version:        r.version,
		Lease:          r.lease,
	}
	if len(r.value) > 0 {
		kv.Value = buf[len(buf)-len(r.value):]
	}
	return buf[:k:k], buf[k:], kv
}

// appendRecord appends the encoding of r to dst.
func appendRecord(dst []byte, r record) []byte {
	var flags byte
	if r.tombstone {
		flags |= flagTombstone
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(r.sub))
	dst = binary.AppendUvarint(dst, uint64(r.createRev))
	dst = binary.AppendUvarint(dst, uint64(r.version))
	dst = binary.AppendVarint(dst, r.lease)
	return append(dst, r.value...)
}

// decodeRecord decodes a value made by appendRecord. The returned value
// aliases b.
func decodeRecord(b []byte) (record, error) {
	var r record
	if len(b) == 0 {
		return r, fmt.Errorf("empty value: %w", ErrCorrupt)
	}
	flags := b[0]
	if flags&^knownFlags != 0 {
		return r, fmt.Errorf("unknown flags %#x: %w", flags, ErrCorrupt)
	}
	r.tombstone = flags&flagTombstone != 0
	rest := b[1:]
	sub, rest, err := readUvarint(rest, "sub", math.MaxInt32)
	if err != nil {
		return r, err
	}
	r.sub = int32(sub)
	if r.createRev, rest, err = readUvarint(rest, "create revision", math.MaxInt64); err != nil {
		return r, err
	}
	if r.version, rest, err = readUvarint(rest, "version", math.MaxInt64); err != nil {
		return r, err
	}
	lease, n := binary.Varint(rest)
	if n <= 0 {
		return r, fmt.Errorf("read lease: %w", ErrCorrupt)
	}
	r.lease, rest = lease, rest[n:]
	r.value = rest
	if err := r.check(); err != nil {
		return r, err
	}
	return r, nil
}

// readUvarint reads one uvarint no larger than max from b.
func readUvarint(b []byte, field string, max uint64) (int64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, fmt.Errorf("read %s: %w", field, ErrCorrupt)
	}
	if v > max {
		return 0, nil, fmt.Errorf("%s %d out of range: %w", field, v, ErrCorrupt)
	}
	return int64(v), b[n:], nil
}

// check verifies the invariants between the fields of a decoded record.
func (r record) check() error {
	if r.tombstone {
		if r.createRev != 0 || r.version != 0 || r.lease != 0 || len(r.value) != 0 {
			return fmt.Errorf("tombstone with data: %w", ErrCorrupt)
		}
		return nil
	}
	if r.createRev < 1 || r.version < 1 {
		return fmt.Errorf("live version with create revision %d and version %d: %w",
			r.createRev, r.version, ErrCorrupt)
	}
	return nil
}

// isTombstone reports whether an encoded value is a tombstone, validating the
// whole value.
func isTombstone(b []byte) (bool, error) {
	r, err := decodeRecord(b)
	if err != nil {
		return false, err
	}
	return r.tombstone, nil
}

// keyValue builds the KeyValue of a live record of userKey written at rev.
// The key and (unless keysOnly) the value are copied.
func (r record) keyValue(userKey []byte, rev int64, keysOnly bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{
		Key:            append([]byte(nil), userKey...),
		CreateRevision: r.createRev,
		ModRevision:    rev,
		Version:        r.version,
		Lease:          r.lease,
	}
	if !keysOnly {
		kv.Value = append([]byte(nil), r.value...)
	}
	return kv
}
