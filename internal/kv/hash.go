package kv

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/synod-io/synod/internal/mvcc"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// HashKV hashes the KV state at revision rev (0: the current revision), as
// etcd's Maintenance.HashKV: members that applied the same history report the
// same hash for the same revision and compaction revision. It hashes every
// version with a revision in (CompactRevision, rev], and for each key the
// newest version at or below CompactRevision if it is live. Versions that
// physical compaction may or may not have removed yet are left out, so the
// hash does not depend on how far each member's background compaction got.
func HashKV(r pebble.Reader, m Meta, rev int64) (hash uint32, hashRev int64, err error) {
	if rev <= 0 {
		rev = m.Revision
	}
	if rev > m.Revision {
		return 0, 0, rpctypes.ErrGRPCFutureRev
	}
	if rev < m.CompactRevision {
		return 0, 0, rpctypes.ErrGRPCCompacted
	}
	h := crc32.New(castagnoli)
	var lastKey []byte
	sawOld := false // a version <= CompactRevision of lastKey was considered
	var buf []byte
	err = mvcc.ChangesSince(r, nil, nil, 0, func(c mvcc.Change) error {
		kv := c.KV
		if !bytes.Equal(kv.Key, lastKey) {
			lastKey = append(lastKey[:0], kv.Key...)
			sawOld = false
		}
		switch {
		case kv.ModRevision > rev:
			return nil
		case kv.ModRevision <= m.CompactRevision:
			if sawOld {
				return nil
			}
			sawOld = true
			if c.Type == mvccpb.DELETE {
				return nil
			}
		}
		buf = appendVersion(buf[:0], c.Type, kv)
		_, err := h.Write(buf)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return h.Sum32(), rev, nil
}

func appendVersion(b []byte, t mvccpb.Event_EventType, kv *mvccpb.KeyValue) []byte {
	b = binary.AppendUvarint(b, uint64(len(kv.Key)))
	b = append(b, kv.Key...)
	b = append(b, byte(t))
	for _, v := range []int64{kv.ModRevision, kv.CreateRevision, kv.Version, kv.Lease} {
		b = binary.AppendVarint(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(kv.Value)))
	return append(b, kv.Value...)
}
