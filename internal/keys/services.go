package keys

import (
	"bytes"
	"errors"
)

// ReservedPrefix starts the user keys reserved for Synod's own services
// whose data lives in data ranges (rate limiters under "limit/", job queues
// under "queue/"). The etcd KV API refuses writes to them: they are written
// only by the services' commands. A 0x01 byte first keeps them out of every
// printable prefix and from-key range, while a shell can still name them
// ($'\x01synod/limit/'), as etcd's role permissions need.
var ReservedPrefix = []byte("\x01synod/")

// ReservedEnd is the end of the reserved user keys.
var ReservedEnd = PrefixEnd(ReservedPrefix)

// LimitPrefix is the reserved prefix of the rate limiters' keys.
var LimitPrefix = []byte("\x01synod/limit/")

// OverlapsReserved reports whether the etcd key range [key, end) holds
// reserved keys (end as etcd gives it: empty for the key alone, "\x00" for
// every key from key on).
func OverlapsReserved(key, end []byte) bool {
	if len(end) == 0 {
		return bytes.HasPrefix(key, ReservedPrefix)
	}
	if len(end) == 1 && end[0] == 0 {
		return bytes.Compare(key, ReservedEnd) < 0
	}
	return bytes.Compare(key, ReservedEnd) < 0 && bytes.Compare(end, ReservedPrefix) > 0
}

// serviceStatePrefix starts the service state span: replicated state of
// the reserved services kept outside MVCC, keyed by a reserved user key.
const serviceStatePrefix byte = 0x11

// ServiceStateKey is the Pebble key of service state stored under the
// reserved user key userKey: the prefix byte, the key escaped as MVCC
// keys are, and the terminator. It is overwritten in place, without
// versions: state that changes many times a second (a limiter key's
// checkpoint) would otherwise pile up MVCC history until a compaction.
// Sorted like user keys, so a range's part of the span is the user keys'
// interval.
func ServiceStateKey(userKey []byte) []byte {
	k := appendEscaped(append(make([]byte, 0, len(userKey)+3), serviceStatePrefix), userKey)
	return append(k, 0x00, 0x01)
}

// ServiceStatePrefix is the Pebble prefix of the service state of every
// user key starting with userPrefix.
func ServiceStatePrefix(userPrefix []byte) []byte {
	return appendEscaped([]byte{serviceStatePrefix}, userPrefix)
}

// DecodeServiceStateKey returns the user key of a ServiceStateKey.
func DecodeServiceStateKey(k []byte) ([]byte, error) {
	if len(k) < 3 || k[0] != serviceStatePrefix || k[len(k)-2] != 0x00 || k[len(k)-1] != 0x01 {
		return nil, errors.New("not a service state key")
	}
	k = k[1 : len(k)-2]
	out := make([]byte, 0, len(k))
	for i := 0; i < len(k); i++ {
		out = append(out, k[i])
		if k[i] == 0x00 {
			if i+1 >= len(k) || k[i+1] != 0xff {
				return nil, errors.New("bad escape in service state key")
			}
			i++
		}
	}
	return out, nil
}

// ServiceStateSpan covers the service state of every reserved key.
func ServiceStateSpan() Span {
	return Span{Start: []byte{serviceStatePrefix}, End: []byte{serviceStatePrefix + 1}}
}

func appendEscaped(dst, key []byte) []byte {
	for _, c := range key {
		if c == 0x00 {
			dst = append(dst, 0x00, 0xff)
			continue
		}
		dst = append(dst, c)
	}
	return dst
}
