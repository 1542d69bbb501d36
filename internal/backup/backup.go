package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/synod-io/synod/internal/keys"
)

const (
	magic   = "SYNODBAK"
	version = 1
)

// Header describes a backup.
type Header struct {
	ClusterID       uint64
	MemberID        uint64
	Revision        int64
	CompactRevision int64
	AppliedIndex    uint64
	CreatedUnix     int64
}

func (h Header) encode() []byte {
	var b []byte
	for i, v := range []uint64{h.ClusterID, h.MemberID, uint64(h.Revision), uint64(h.CompactRevision), h.AppliedIndex, uint64(h.CreatedUnix)} {
		b = protowire.AppendTag(b, protowire.Number(i+1), protowire.VarintType)
		b = protowire.AppendVarint(b, v)
	}
	return b
}

func decodeHeader(b []byte) (Header, error) {
	var h Header
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.VarintType {
			return h, errCorrupt
		}
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return h, errCorrupt
		}
		b = b[n:]
		switch num {
		case 1:
			h.ClusterID = v
		case 2:
			h.MemberID = v
		case 3:
			h.Revision = int64(v)
		case 4:
			h.CompactRevision = int64(v)
		case 5:
			h.AppliedIndex = v
		case 6:
			h.CreatedUnix = int64(v)
		}
	}
	return h, nil
}

var errCorrupt = errors.New("backup is corrupt")

// Write writes a backup of the given spans (the replicated spans of the
// node's ranges, in key order), read from r (a Pebble snapshot), to w,
// leaving out the keys keep refuses (nil: none). It returns the number of
// bytes written.
func Write(w io.Writer, r pebble.Reader, spans []keys.Span, h Header, keep func(key []byte) bool) (int64, error) {
	sum := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(w, sum)}
	bw := bufio.NewWriterSize(cw, 256<<10)
	var tmp []byte
	tmp = append(tmp, magic...)
	tmp = binary.AppendUvarint(tmp, version)
	hb := h.encode()
	tmp = binary.AppendUvarint(tmp, uint64(len(hb)))
	tmp = append(tmp, hb...)
	if _, err := bw.Write(tmp); err != nil {
		return cw.n, err
	}
	for _, span := range spans {
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: span.Start, UpperBound: span.End})
		if err != nil {
			return cw.n, err
		}
		for valid := it.First(); valid; valid = it.Next() {
			if keep != nil && !keep(it.Key()) {
				continue
			}
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return cw.n, err
			}
			tmp = binary.AppendUvarint(tmp[:0], uint64(len(it.Key())))
			tmp = append(tmp, it.Key()...)
			tmp = binary.AppendUvarint(tmp, uint64(len(v)))
			if _, err := bw.Write(tmp); err != nil {
				it.Close()
				return cw.n, err
			}
			if _, err := bw.Write(v); err != nil {
				it.Close()
				return cw.n, err
			}
		}
		if err := it.Close(); err != nil {
			return cw.n, err
		}
	}
	if err := bw.WriteByte(0); err != nil {
		return cw.n, err
	}
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	// Pad to a multiple of 512 bytes before the checksum: etcdctl's
	// `snapshot save` accepts a stream only if its size is a multiple of 512
	// plus a 32-byte SHA-256 (an etcd backup is a file of 512-byte sectors).
	if pad := (blockSize - cw.n%blockSize) % blockSize; pad > 0 {
		if _, err := cw.Write(make([]byte, pad)); err != nil {
			return cw.n, err
		}
	}
	n, err := w.Write(sum.Sum(nil))
	return cw.n + int64(n), err
}

// blockSize is the unit the backup is padded to before its checksum.
const blockSize = 512

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// hashingReader hashes what it reads.
type hashingReader struct {
	r   *bufio.Reader
	h   hash.Hash
	one [1]byte // ReadByte's buffer: a []byte{b} per byte would be allocated
}

func (r *hashingReader) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.one[0] = b
		r.h.Write(r.one[:])
	}
	return b, err
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	return n, err
}

// Read reads a backup, calling fn for each key/value pair in order, and
// verifies the checksum at the end. fn's slices are valid only during the
// call. A corrupt or truncated backup yields an error, possibly after some
// calls to fn: callers that write must treat the data as tentative until
// Read returns nil (Verify first, or write to a place they discard).
func Read(r io.Reader, fn func(key, value []byte) error) (Header, error) {
	hr := &hashingReader{r: bufio.NewReaderSize(r, 256<<10), h: sha256.New()}
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(hr, m); err != nil || string(m) != magic {
		return Header{}, fmt.Errorf("not a synod backup (bad magic): %w", errCorrupt)
	}
	v, err := binary.ReadUvarint(hr)
	if err != nil || v != version {
		return Header{}, fmt.Errorf("unsupported backup version %d", v)
	}
	hb, err := readChunk(hr, 1<<20)
	if err != nil {
		return Header{}, err
	}
	h, err := decodeHeader(hb)
	if err != nil {
		return Header{}, err
	}
	var key, value []byte
	for {
		kl, err := binary.ReadUvarint(hr)
		if err != nil {
			return h, fmt.Errorf("read key length: %w", errCorrupt)
		}
		if kl == 0 {
			break
		}
		if kl > 64<<20 {
			return h, errCorrupt
		}
		key = grow(key, int(kl))
		if _, err := io.ReadFull(hr, key); err != nil {
			return h, fmt.Errorf("read key: %w", errCorrupt)
		}
		vl, err := binary.ReadUvarint(hr)
		if err != nil || vl > 1<<30 {
			return h, fmt.Errorf("read value length: %w", errCorrupt)
		}
		value = grow(value, int(vl))
		if _, err := io.ReadFull(hr, value); err != nil {
			return h, fmt.Errorf("read value: %w", errCorrupt)
		}
		if err := fn(key, value); err != nil {
			return h, err
		}
	}
	// What is left is zero padding (less than a block) and the checksum.
	rest, err := io.ReadAll(io.LimitReader(hr.r, blockSize+sha256.Size))
	if err != nil {
		return h, fmt.Errorf("read checksum: %w", errCorrupt)
	}
	if len(rest) < sha256.Size || len(rest) >= blockSize+sha256.Size {
		return h, fmt.Errorf("bad trailer of %d bytes: %w", len(rest), errCorrupt)
	}
	pad, got := rest[:len(rest)-sha256.Size], rest[len(rest)-sha256.Size:]
	for _, b := range pad {
		if b != 0 {
			return h, fmt.Errorf("bad padding: %w", errCorrupt)
		}
	}
	hr.h.Write(pad)
	if !bytes.Equal(got, hr.h.Sum(nil)) {
		return h, fmt.Errorf("checksum mismatch: %w", errCorrupt)
	}
	return h, nil
}

// Verify reads a whole backup and checks it, returning its header and the
// number of pairs it holds.
func Verify(r io.Reader) (Header, int, error) {
	n := 0
	h, err := Read(r, func(_, _ []byte) error { n++; return nil })
	return h, n, err
}

func readChunk(r *hashingReader, limit int) ([]byte, error) {
	l, err := binary.ReadUvarint(r)
	if err != nil || l > uint64(limit) {
		return nil, errCorrupt
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, errCorrupt
	}
	return b, nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
