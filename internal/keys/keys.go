package keys

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// RangeID names one range, replicated by its own Raft group: the system range,
// or a data range (a contiguous span of the user keyspace).
type RangeID uint64

// The ranges a cluster bootstraps with.
const (
	// SystemRangeID is the system range: members, alarms, auth (later the
	// revision oracle and the range descriptors). It never splits.
	SystemRangeID RangeID = 1
	// FirstDataRangeID is the data range that covers every user key when a
	// cluster bootstraps (its leases too, until they move to the system
	// range).
	FirstDataRangeID RangeID = 2
)

// Layout is the version of the layout of a node's data this code writes and
// reads, recorded in NodeLayoutKey. Version 2 has a system range and data
// ranges; data dirs of version 1 (one range holding everything) have no key.
const Layout = 2

const (
	localPrefix      byte = 0x01
	replicatedPrefix byte = 0x02
	systemPrefix     byte = 0x03
	mvccPrefix       byte = 0x10
)

var (
	identSuffix     = []byte("ident")
	layoutSuffix    = []byte("layout")
	sysMirrorSuffix = []byte("sys")
	nodeRemoved     = []byte("removed")
	nodeDataLost    = []byte("lost")
	peerSecret      = []byte("peersecret")
	hardStateSuffix = []byte("hs")
	truncatedSuffix = []byte("rt")
	raftLogSuffix   = []byte("rl")
	appliedSuffix   = []byte("as")
	memberInfix     = []byte("member")
	removedInfix    = []byte("removed")
	alarmInfix      = []byte("alarm")
	leaseInfix      = []byte("lease:")
	leaseKeyInfix   = []byte("lkey:")
	authInfix       = []byte("auth:")
	authUserInfix   = []byte("auth:user:")
	authRoleInfix   = []byte("auth:role:")
	authEnabledSfx  = []byte("auth:enabled")
	authRevisionSfx = []byte("auth:rev")
	oracleInfix     = []byte("oracle:")
	rangeDescInfix  = []byte("range:")
	txnLocksSuffix  = []byte("tl")
	txnRecordSuffix = []byte("tr")
	txnStateSuffix  = []byte("tx")
	descSuffix      = []byte("rd")
	leaseHookSuffix = []byte("lh")
)

// NodeIdentKey holds the identity of this node: the cluster it belongs to and
// its member ID. It is written once, when the node first starts.
func NodeIdentKey() []byte {
	return append([]byte{localPrefix}, identSuffix...)
}

// NodeLayoutKey holds the version of the data layout the node's data dir
// was written with (Layout, one byte).
func NodeLayoutKey() []byte {
	return append([]byte{localPrefix}, layoutSuffix...)
}

func rangeLocalKey(prefix byte, id RangeID, suffix []byte, extra int) []byte {
	k := make([]byte, 0, 2+8+len(suffix)+extra)
	k = append(k, prefix, 'r')
	k = binary.BigEndian.AppendUint64(k, uint64(id))
	return append(k, suffix...)
}

// NodeRemovedKey marks, on this node only, that it was removed from its
// cluster: a restart with this data refuses to run.
func NodeRemovedKey() []byte {
	return append([]byte{localPrefix}, nodeRemoved...)
}

// NodeDataLostKey marks, on this node only, that the member found its data
// gone (its log lacked entries it had acknowledged): a restart with this
// data refuses to run. The value says how it was found.
func NodeDataLostKey() []byte {
	return append([]byte{localPrefix}, nodeDataLost...)
}

// NodePeerSecretKey holds the cluster's peer secret on this node, with
// which it authenticates its peer connections when it has no peer TLS. It
// is node-local so that no snapshot or backup carries it.
func NodePeerSecretKey() []byte {
	return append([]byte{localPrefix}, peerSecret...)
}

// RaftHardStateKey holds the Raft HardState (term, vote, commit) of a range.
func RaftHardStateKey(id RangeID) []byte {
	return rangeLocalKey(localPrefix, id, hardStateSuffix, 0)
}

// RaftTruncatedStateKey holds the index and term of the last entry removed
// from the Raft log of a range.
func RaftTruncatedStateKey(id RangeID) []byte {
	return rangeLocalKey(localPrefix, id, truncatedSuffix, 0)
}

// RaftLogPrefix is the prefix of every Raft log entry of a range.
func RaftLogPrefix(id RangeID) []byte {
	return rangeLocalKey(localPrefix, id, raftLogSuffix, 0)
}

// RaftLogKey holds the Raft log entry at index.
func RaftLogKey(id RangeID, index uint64) []byte {
	k := rangeLocalKey(localPrefix, id, raftLogSuffix, 8)
	return binary.BigEndian.AppendUint64(k, index)
}

// RaftLogIndex decodes the index from a key made by RaftLogKey.
func RaftLogIndex(key []byte) (uint64, error) {
	if len(key) < 8 {
		return 0, fmt.Errorf("raft log key %q too short", key)
	}
	return binary.BigEndian.Uint64(key[len(key)-8:]), nil
}

// NodeLocalSpan covers every node-local, unreplicated key: node identity and
// marks, and every range's Raft log, HardState and truncated state.
func NodeLocalSpan() Span {
	return Span{Start: []byte{localPrefix}, End: []byte{localPrefix + 1}}
}

// RangeLocalUnreplicatedSpan covers every unreplicated key of a range (its Raft
// log, HardState and truncated state).
func RangeLocalUnreplicatedSpan(id RangeID) Span {
	start := rangeLocalKey(localPrefix, id, nil, 0)
	return Span{Start: start, End: PrefixEnd(start)}
}

// RangeAppliedStateKey holds the replicated applied state of a range: applied
// index and term, configuration and the KV revision counters.
func RangeAppliedStateKey(id RangeID) []byte {
	return rangeLocalKey(replicatedPrefix, id, appliedSuffix, 0)
}

// RangeSystemStateKey holds, in a data range, the copy of the system state
// its commands are checked against at apply time (the auth state and
// whether writes are refused for lack of space), which the system range
// hands every data range.
func RangeSystemStateKey(id RangeID) []byte {
	return rangeLocalKey(replicatedPrefix, id, sysMirrorSuffix, 0)
}

// TxnLocksKey holds, in data range id, the locks of transaction txn
// (internal/txnlock).
func TxnLocksKey(id RangeID, txn int64) []byte {
	return binary.BigEndian.AppendUint64(rangeLocalKey(replicatedPrefix, id, txnLocksSuffix, 8), uint64(txn))
}

// TxnLocksSpan covers the locks of every transaction in data range id.
func TxnLocksSpan(id RangeID) Span {
	start := rangeLocalKey(replicatedPrefix, id, txnLocksSuffix, 0)
	return Span{Start: start, End: PrefixEnd(start)}
}

// TxnRecordKey holds, in the data range of its primary key, the record of
// transaction txn (internal/txnlock).
func TxnRecordKey(id RangeID, txn int64) []byte {
	return binary.BigEndian.AppendUint64(rangeLocalKey(replicatedPrefix, id, txnRecordSuffix, 8), uint64(txn))
}

// TxnRecordSpan covers the records of every transaction whose primary key
// data range id holds.
func TxnRecordSpan(id RangeID) Span {
	start := rangeLocalKey(replicatedPrefix, id, txnRecordSuffix, 0)
	return Span{Start: start, End: PrefixEnd(start)}
}

// TxnStateKey holds, in data range id, the highest revision a transaction
// across ranges committed at there.
func TxnStateKey(id RangeID) []byte {
	return rangeLocalKey(replicatedPrefix, id, txnStateSuffix, 0)
}

// LeaseHooksKey marks, in the first data range, a lease revoked by a
// transaction across ranges whose services (job queues) have not yet been
// told: a revocation command for the lease tells them and deletes it.
func LeaseHooksKey(id RangeID, lease int64) []byte {
	return binary.BigEndian.AppendUint64(rangeLocalKey(replicatedPrefix, id, leaseHookSuffix, 8), uint64(lease))
}

// LeaseHooksSpan covers every LeaseHooksKey of data range id.
func LeaseHooksSpan(id RangeID) Span {
	start := rangeLocalKey(replicatedPrefix, id, leaseHookSuffix, 0)
	return Span{Start: start, End: PrefixEnd(start)}
}

// RangeDescriptorKey holds, in data range id, the range's own descriptor
// (internal/rangedesc): its span and generation as its log made them. A
// split writes it for both sides in the same batch, so it is the
// authority on the range's span; the meta copies in the system range
// (RangeDescKey) follow it.
func RangeDescriptorKey(id RangeID) []byte {
	return rangeLocalKey(replicatedPrefix, id, descSuffix, 0)
}

// ReplicatedRangeIDOf returns the range ID of a replicated range-local
// key, and whether key is one.
func ReplicatedRangeIDOf(key []byte) (RangeID, bool) {
	if len(key) < 10 || key[0] != replicatedPrefix || key[1] != 'r' {
		return 0, false
	}
	return RangeID(binary.BigEndian.Uint64(key[2:10])), true
}

// ReplicatedRangeLocalSpan covers the replicated range-local keys of
// every range.
func ReplicatedRangeLocalSpan() Span {
	return Span{Start: []byte{replicatedPrefix}, End: []byte{replicatedPrefix + 1}}
}

// RangeLocalReplicatedSpan covers the replicated range-local keys of a range.
func RangeLocalReplicatedSpan(id RangeID) Span {
	start := rangeLocalKey(replicatedPrefix, id, nil, 0)
	return Span{Start: start, End: PrefixEnd(start)}
}

// MemberKey holds the description of one cluster member.
func MemberKey(id uint64) []byte {
	k := make([]byte, 0, 1+len(memberInfix)+8)
	k = append(k, systemPrefix)
	k = append(k, memberInfix...)
	return binary.BigEndian.AppendUint64(k, id)
}

// RemovedMemberKey marks a member that was removed from the cluster: its
// traffic is refused, and it learns why.
func RemovedMemberKey(id uint64) []byte {
	k := make([]byte, 0, 1+len(removedInfix)+8)
	k = append(k, systemPrefix)
	k = append(k, removedInfix...)
	return binary.BigEndian.AppendUint64(k, id)
}

// AlarmKey records an active alarm of a member.
func AlarmKey(memberID uint64, alarm int32) []byte {
	k := make([]byte, 0, 1+len(alarmInfix)+12)
	k = append(k, systemPrefix)
	k = append(k, alarmInfix...)
	k = binary.BigEndian.AppendUint64(k, memberID)
	return binary.BigEndian.AppendUint32(k, uint32(alarm))
}

// AlarmSpan covers every AlarmKey.
func AlarmSpan() Span {
	start := append([]byte{systemPrefix}, alarmInfix...)
	return Span{Start: start, End: PrefixEnd(start)}
}

// DecodeAlarmKey returns the member and alarm type of an AlarmKey.
func DecodeAlarmKey(k []byte) (memberID uint64, alarm int32, err error) {
	if len(k) != 1+len(alarmInfix)+12 {
		return 0, 0, fmt.Errorf("alarm key %q has the wrong length", k)
	}
	b := k[1+len(alarmInfix):]
	return binary.BigEndian.Uint64(b), int32(binary.BigEndian.Uint32(b[8:])), nil
}

// RemovedMemberSpan covers every RemovedMemberKey.
func RemovedMemberSpan() Span {
	start := append([]byte{systemPrefix}, removedInfix...)
	return Span{Start: start, End: PrefixEnd(start)}
}

// MemberSpan covers every MemberKey.
func MemberSpan() Span {
	start := append([]byte{systemPrefix}, memberInfix...)
	return Span{Start: start, End: PrefixEnd(start)}
}

// LeaseKey holds the record of one lease.
func LeaseKey(id int64) []byte {
	k := make([]byte, 0, 1+len(leaseInfix)+8)
	k = append(k, systemPrefix)
	k = append(k, leaseInfix...)
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

// LeaseSpan covers every LeaseKey.
func LeaseSpan() Span {
	start := append([]byte{systemPrefix}, leaseInfix...)
	return Span{Start: start, End: PrefixEnd(start)}
}

// LeaseIDFromKey decodes the lease ID of a key made by LeaseKey.
func LeaseIDFromKey(k []byte) (int64, error) {
	if len(k) != 1+len(leaseInfix)+8 {
		return 0, fmt.Errorf("lease key %q has the wrong length", k)
	}
	return int64(binary.BigEndian.Uint64(k[len(k)-8:])), nil
}

// LeaseAttachmentKey records that userKey is attached to lease id, so that
// revoking the lease finds its keys without scanning the data.
func LeaseAttachmentKey(id int64, userKey []byte) []byte {
	k := LeaseAttachmentPrefix(id)
	return append(k, userKey...)
}

// LeaseAttachmentPrefix is the prefix of every attachment of lease id.
func LeaseAttachmentPrefix(id int64) []byte {
	k := make([]byte, 0, 1+len(leaseKeyInfix)+8+32)
	k = append(k, systemPrefix)
	k = append(k, leaseKeyInfix...)
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

func systemKey(infix []byte, name string) []byte {
	k := make([]byte, 0, 1+len(infix)+len(name))
	k = append(k, systemPrefix)
	k = append(k, infix...)
	return append(k, name...)
}

// AuthEnabledKey holds whether authentication is enabled (one byte, 1 or 0).
func AuthEnabledKey() []byte { return systemKey(authEnabledSfx, "") }

// AuthRevisionKey holds the auth revision (8 bytes), bumped by every change of
// the auth state.
func AuthRevisionKey() []byte { return systemKey(authRevisionSfx, "") }

// AuthUserKey holds one user (authpb.User, password as a bcrypt hash).
func AuthUserKey(name string) []byte { return systemKey(authUserInfix, name) }

// AuthUserSpan covers every AuthUserKey.
func AuthUserSpan() Span {
	start := systemKey(authUserInfix, "")
	return Span{Start: start, End: PrefixEnd(start)}
}

// AuthRoleKey holds one role (authpb.Role).
func AuthRoleKey(name string) []byte { return systemKey(authRoleInfix, name) }

// AuthRoleSpan covers every AuthRoleKey.
func AuthRoleSpan() Span {
	start := systemKey(authRoleInfix, "")
	return Span{Start: start, End: PrefixEnd(start)}
}

// AuthSpan covers the whole auth state.
func AuthSpan() Span {
	start := systemKey(authInfix, "")
	return Span{Start: start, End: PrefixEnd(start)}
}

// SystemSpan covers the whole replicated system keyspace.
func SystemSpan() Span {
	return Span{Start: []byte{systemPrefix}, End: []byte{systemPrefix + 1}}
}

// OracleCeilingKey holds the revision oracle's ceiling (8 bytes): no
// revision above it was ever handed out.
func OracleCeilingKey() []byte { return systemKey(oracleInfix, "ceiling") }

// NextRangeIDKey holds the system range's counter of range IDs: the
// highest ID handed out to a range made by a split.
func NextRangeIDKey() []byte { return systemKey(oracleInfix, "rangeid") }

// OracleSpan covers the revision oracle's keys.
func OracleSpan() Span {
	start := append([]byte{systemPrefix}, oracleInfix...)
	return Span{Start: start, End: PrefixEnd(start)}
}

// RangeDescKey holds the descriptor of range id (internal/rangedesc).
func RangeDescKey(id RangeID) []byte {
	k := append([]byte{systemPrefix}, rangeDescInfix...)
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

// RangeDescSpan covers the descriptors of every range.
func RangeDescSpan() Span {
	start := append([]byte{systemPrefix}, rangeDescInfix...)
	return Span{Start: start, End: PrefixEnd(start)}
}

// MVCCSpan covers all MVCC user data.
func MVCCSpan() Span {
	return Span{Start: []byte{mvccPrefix}, End: []byte{mvccPrefix + 1}}
}

// Span is the half-open interval [Start, End) of Pebble keys.
type Span struct {
	Start, End []byte
}

// PrefixEnd returns the smallest key greater than every key with prefix p.
// It returns nil (no upper bound) when p is empty or all 0xff.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// PrefixRangeEnd is the etcd range_end of a prefix query for p: PrefixEnd,
// or "\x00" (every key >= p) where PrefixEnd has no bound.
func PrefixRangeEnd(p []byte) []byte {
	if end := PrefixEnd(p); end != nil {
		return end
	}
	return []byte{0}
}

// DataRangeSpans returns the replicated spans of data range id over the
// user keys [start, end) (an empty end: to the end of the keyspace): its
// applied state, the versions and the services' state of its keys, and,
// for the first data range, the leases (which live there).
func DataRangeSpans(id RangeID, start, end []byte) []Span {
	spans := []Span{RangeLocalReplicatedSpan(id)}
	if id == FirstDataRangeID {
		spans = append(spans, LeaseSpan(), LeaseAttachmentSpan())
	}
	return append(spans, UserKeySpan(mvccPrefix, start, end), UserKeySpan(serviceStatePrefix, start, end))
}

// MVCCSpanOf covers the versions of the user keys [start, end) (an empty
// end: to the end of the keyspace).
func MVCCSpanOf(start, end []byte) Span { return UserKeySpan(mvccPrefix, start, end) }

// UserKeySpan covers the Pebble keys, under prefix (the MVCC data's or the
// services' state's), of the user keys [start, end): each is the prefix,
// the escaped user key and a 0x00 0x01 terminator, so the user keys' order
// is the Pebble keys'.
func UserKeySpan(prefix byte, start, end []byte) Span {
	s := Span{Start: []byte{prefix}, End: []byte{prefix + 1}}
	if len(start) > 0 {
		s.Start = append(appendEscaped([]byte{prefix}, start), 0x00, 0x01)
	}
	if len(end) > 0 {
		s.End = append(appendEscaped([]byte{prefix}, end), 0x00, 0x01)
	}
	return s
}

// ReplicatedSpans returns the Pebble spans that make up the replicated state of
// a range, in key order: what a snapshot of the range contains. The system
// range holds the system keyspace but the leases (members, alarms, auth,
// the revision oracle's ceiling); the one data range holds every user key,
// the leases (until they move to the system range) and the reserved
// services' state of its keys (ServiceStateSpan; all of it while there is
// one data range). A data range over a part of the keyspace has the spans
// DataRangeSpans gives for its descriptor.
func ReplicatedSpans(id RangeID) []Span {
	spans := []Span{RangeLocalReplicatedSpan(id)}
	if id == SystemRangeID {
		return append(spans, AlarmSpan(), AuthSpan(), MemberSpan(), OracleSpan(), RangeDescSpan(), RemovedMemberSpan())
	}
	return DataRangeSpans(id, nil, nil)
}

// LeaseAttachmentSpan covers the attachments of every lease.
func LeaseAttachmentSpan() Span {
	start := append([]byte{systemPrefix}, leaseKeyInfix...)
	return Span{Start: start, End: PrefixEnd(start)}
}

const revisionLen = 8

// MVCCKey encodes the Pebble key of the version of userKey written at rev.
func MVCCKey(userKey []byte, rev int64) []byte {
	return AppendMVCCKey(make([]byte, 0, len(userKey)+4+revisionLen), userKey, rev)
}

// AppendMVCCKey appends MVCCKey(userKey, rev) to dst.
func AppendMVCCKey(dst, userKey []byte, rev int64) []byte {
	return binary.BigEndian.AppendUint64(AppendMVCCKeyPrefix(dst, userKey), ^uint64(rev))
}

// AppendMVCCKeyPrefix appends the encoding of userKey shared by all of its
// versions: the MVCC prefix byte, the escaped key and the terminator.
func AppendMVCCKeyPrefix(dst, userKey []byte) []byte {
	dst = append(dst, mvccPrefix)
	for _, c := range userKey {
		if c == 0x00 {
			dst = append(dst, 0x00, 0xff)
			continue
		}
		dst = append(dst, c)
	}
	return append(dst, 0x00, 0x01)
}

// MVCCKeyUpperBound returns the first Pebble key after every version of
// userKey: a SeekGE to it skips to the next user key.
func MVCCKeyUpperBound(userKey []byte) []byte {
	return AppendMVCCPrefixEnd(nil, AppendMVCCKeyPrefix(make([]byte, 0, len(userKey)+3), userKey))
}

// AppendMVCCPrefixEnd appends to dst the first Pebble key after every
// version sharing prefix, an AppendMVCCKeyPrefix result: the prefix with its
// terminator raised.
func AppendMVCCPrefixEnd(dst, prefix []byte) []byte {
	dst = append(dst, prefix...)
	dst[len(dst)-1] = 0x02
	return dst
}

// MVCCBound returns the Pebble key at which the versions of userKey begin,
// which is also the lower bound of a scan starting at userKey. A nil userKey
// means the start of the user keyspace.
func MVCCBound(userKey []byte) []byte {
	if userKey == nil {
		return []byte{mvccPrefix}
	}
	return AppendMVCCKeyPrefix(make([]byte, 0, len(userKey)+3), userKey)
}

// MVCCEnd returns the exclusive upper bound of a scan over user keys below
// end. A nil end means the end of the user keyspace.
func MVCCEnd(end []byte) []byte {
	if end == nil {
		return []byte{mvccPrefix + 1}
	}
	return MVCCBound(end)
}

var errBadMVCCKey = errors.New("malformed mvcc key")

// DecodeMVCCKey splits a Pebble key made by MVCCKey into the user key and the
// revision. The user key is appended to dst, which may be nil.
func DecodeMVCCKey(dst, k []byte) (userKey []byte, rev int64, err error) {
	if len(k) < 1+2+revisionLen || k[0] != mvccPrefix {
		return nil, 0, errBadMVCCKey
	}
	body := k[1 : len(k)-revisionLen]
	userKey = dst[:0]
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != 0x00 {
			userKey = append(userKey, c)
			continue
		}
		if i+1 >= len(body) {
			return nil, 0, errBadMVCCKey
		}
		switch body[i+1] {
		case 0xff:
			userKey = append(userKey, 0x00)
			i++
		case 0x01:
			if i+2 != len(body) {
				return nil, 0, errBadMVCCKey
			}
			i++
		default:
			return nil, 0, errBadMVCCKey
		}
	}
	if len(body) < 2 || body[len(body)-2] != 0x00 || body[len(body)-1] != 0x01 {
		return nil, 0, errBadMVCCKey
	}
	rev = int64(^binary.BigEndian.Uint64(k[len(k)-revisionLen:]))
	return userKey, rev, nil
}

// MVCCKeyPrefixLen returns the length of the part of an MVCC key shared by all
// versions of its user key (everything but the revision).
func MVCCKeyPrefixLen(k []byte) int {
	if len(k) < revisionLen {
		return 0
	}
	return len(k) - revisionLen
}

// QueuesPrefix starts the job queues' keys (internal/queue), under
// ReservedPrefix: MVCC user keys written only by the queues' commands.
const QueuesPrefix = "\x01synod/queue/"

// IntersectsReserved reports whether the user keys an etcd request names
// (key alone when rangeEnd is empty; every key >= key when rangeEnd is
// "\x00"; else [key, rangeEnd)) include a reserved one (OverlapsReserved).
func IntersectsReserved(key, rangeEnd []byte) bool { return OverlapsReserved(key, rangeEnd) }
