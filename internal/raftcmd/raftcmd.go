package raftcmd

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/synod-io/synod/internal/keys"
)

// Kind says what a command's payload is.
type Kind uint32

// Command kinds. Values are persisted in Raft logs: never reuse or renumber.
const (
	KindPut             Kind = 1 // etcdserverpb.PutRequest
	KindDeleteRange     Kind = 2 // etcdserverpb.DeleteRangeRequest
	KindTxn             Kind = 3 // etcdserverpb.TxnRequest
	KindCompact         Kind = 4 // etcdserverpb.CompactionRequest
	KindMemberPublish   Kind = 5 // cluster.Member: a member publishes its name and client URLs
	KindLeaseGrant      Kind = 6 // etcdserverpb.LeaseGrantRequest, with the ID chosen by the proposer
	KindLeaseRevoke     Kind = 7 // etcdserverpb.LeaseRevokeRequest
	KindLeaseCheckpoint Kind = 8 // etcdserverpb.LeaseCheckpointRequest
	// KindMemberChange is the context of a Raft configuration change: the
	// record of the member added or promoted (cluster.Member), or just its
	// ID for a removal.
	KindMemberChange Kind = 9
	// KindMemberUpdate changes a member's peer URLs (cluster.Member).
	KindMemberUpdate Kind = 10
	// KindAlarm raises or disarms an alarm (etcdserverpb.AlarmRequest).
	KindAlarm Kind = 11

	// Auth commands: their payloads are the etcdserverpb Auth* requests, with
	// passwords replaced by their bcrypt hashes before proposing.
	KindAuthEnable           Kind = 12 // etcdserverpb.AuthEnableRequest
	KindAuthDisable          Kind = 13 // etcdserverpb.AuthDisableRequest
	KindAuthenticate         Kind = 14 // etcdserverpb.InternalAuthenticateRequest (name and simple token, no password)
	KindUserAdd              Kind = 15 // etcdserverpb.AuthUserAddRequest
	KindUserDelete           Kind = 16 // etcdserverpb.AuthUserDeleteRequest
	KindUserChangePassword   Kind = 17 // etcdserverpb.AuthUserChangePasswordRequest
	KindUserGrantRole        Kind = 18 // etcdserverpb.AuthUserGrantRoleRequest
	KindUserRevokeRole       Kind = 19 // etcdserverpb.AuthUserRevokeRoleRequest
	KindRoleAdd              Kind = 20 // etcdserverpb.AuthRoleAddRequest
	KindRoleDelete           Kind = 21 // etcdserverpb.AuthRoleDeleteRequest
	KindRoleGrantPermission  Kind = 22 // etcdserverpb.AuthRoleGrantPermissionRequest
	KindRoleRevokePermission Kind = 23 // etcdserverpb.AuthRoleRevokePermissionRequest

	// KindTruncateLog lets every member remove its log's entries up to an
	// index the leader saw every member hold (EncodeTruncateLog). No client
	// waits for it.
	KindTruncateLog Kind = 24
	// KindSystemState hands a data range the copy of the system state its
	// commands are checked against at apply time (EncodeSystemState): the
	// auth state and whether writes are refused for lack of space.
	KindSystemState Kind = 25
	// KindOracleCeiling raises the revision oracle's ceiling, kept by the
	// system range (EncodeOracleCeiling): its leader hands out no revision
	// above a ceiling it has not seen applied in its own term.
	KindOracleCeiling Kind = 26
	// KindCompactAt compacts one of several data ranges at a revision that
	// may be above the range's own (etcdserverpb.CompactionRequest): the
	// proposer took it from the oracle with a read fence on the range, so
	// nothing at or below it can commit there any more, and the range's
	// revision rises to it. Every data range then shares one compaction
	// revision, however idle.
	KindCompactAt Kind = 27
	// The commands of transactions across data ranges (internal/txnlock):
	// a prewrite takes a transaction's locks in one range, a commit marks
	// its record committed in its primary key's range, a resolve makes or
	// drops its writes in one range, a push asks (and may abort) its
	// record. None is stamped: a commit and a resolve carry the revision
	// the transaction took from the oracle.
	KindTxnPrewrite Kind = 28
	KindTxnCommit   Kind = 29
	KindTxnResolve  Kind = 30
	KindTxnPush     Kind = 31
	// KindRangeSplit splits a data range in two at a key
	// (rangedesc.SplitCommand): the range keeps the keys below it and a
	// new range, with the same replicas, takes the rest, both created by
	// the one command on every replica. Not stamped: it writes no key.
	KindRangeSplit Kind = 32
	// KindRangeIDAlloc hands out a new range ID from the system range's
	// counter (EncodeOracleCeiling's format: how many IDs; the response
	// is the first).
	KindRangeIDAlloc Kind = 33
	// KindRangeDescs stores data ranges' descriptors in the system range's
	// meta copies (rangedesc.EncodeList), each only over an older
	// generation: splits made them, and the ranges' own copies are the
	// authority.
	KindRangeDescs Kind = 34
	// KindLeaseRevoked tells the services of the first data range (job
	// queues) that a lease a transaction across ranges revoked is gone
	// (etcdserverpb.LeaseRevokeRequest); it does nothing once they were.
	KindLeaseRevoked Kind = 35

	// Kinds from 100 up are the commands of the services whose data lives
	// in data ranges, in key spans of their own, applied by extensions of
	// the data range's state machine (datarange.Extension): 100-149 the
	// job queues', 150-199 the rate limiters'. Each service numbers its own
	// within its block, and persists them in logs like these.
	KindQueueFirst Kind = 100
	KindQueueLast  Kind = 149
	KindLimitFirst Kind = 150
	KindLimitLast  Kind = 199
)

// System reports whether commands of kind k are the system range's: member
// records, alarms, the auth state and the revision oracle's ceiling. The others are data ranges'.
func (k Kind) System() bool {
	switch {
	case k == KindMemberPublish, k == KindMemberUpdate, k == KindAlarm, k == KindOracleCeiling, k == KindRangeIDAlloc, k == KindRangeDescs,
		k >= KindAuthEnable && k <= KindRoleRevokePermission:
		return true
	}
	return false
}

func (k Kind) String() string {
	switch k {
	case KindPut:
		return "put"
	case KindDeleteRange:
		return "delete-range"
	case KindTxn:
		return "txn"
	case KindCompact:
		return "compact"
	case KindCompactAt:
		return "compact-at"
	case KindMemberPublish:
		return "member-publish"
	case KindLeaseGrant:
		return "lease-grant"
	case KindLeaseRevoke:
		return "lease-revoke"
	case KindLeaseCheckpoint:
		return "lease-checkpoint"
	case KindMemberChange:
		return "member-change"
	case KindMemberUpdate:
		return "member-update"
	case KindAlarm:
		return "alarm"
	case KindAuthEnable:
		return "auth-enable"
	case KindAuthDisable:
		return "auth-disable"
	case KindAuthenticate:
		return "authenticate"
	case KindUserAdd:
		return "user-add"
	case KindUserDelete:
		return "user-delete"
	case KindUserChangePassword:
		return "user-change-password"
	case KindUserGrantRole:
		return "user-grant-role"
	case KindUserRevokeRole:
		return "user-revoke-role"
	case KindRoleAdd:
		return "role-add"
	case KindRoleDelete:
		return "role-delete"
	case KindRoleGrantPermission:
		return "role-grant-permission"
	case KindRoleRevokePermission:
		return "role-revoke-permission"
	case KindTruncateLog:
		return "truncate-log"
	case KindSystemState:
		return "system-state"
	case KindOracleCeiling:
		return "oracle-ceiling"
	case KindTxnPrewrite:
		return "txn-prewrite"
	case KindTxnCommit:
		return "txn-commit"
	case KindTxnResolve:
		return "txn-resolve"
	case KindTxnPush:
		return "txn-push"
	case KindRangeSplit:
		return "range-split"
	case KindRangeIDAlloc:
		return "range-id-alloc"
	case KindLeaseRevoked:
		return "lease-revoked"
	case KindRangeDescs:
		return "range-descs"
	}
	return fmt.Sprintf("kind(%d)", uint32(k))
}

// Command is the content of one normal Raft entry.
type Command struct {
	RangeID   keys.RangeID
	Proposer  uint64 // member ID of the proposing node
	RequestID uint64 // unique among the proposer's in-flight requests
	Kind      Kind
	Payload   []byte // protobuf encoding of the request named by Kind
	// Term, if not zero, fences the command to its proposer's leadership: it
	// applies only if its log entry has this term. Only the leader of a term
	// appends entries of that term, so a decision taken by a deposed leader
	// (a lease expiry judged by its stale clock) can never take effect.
	Term uint64
	// AuthRevision, if not zero, is the auth revision at which the request
	// was authorized: the command fails with etcd's ErrGRPCAuthOldRevision if
	// the auth state changed since, so a revoked permission cannot be used by
	// a request checked just before the revocation.
	AuthRevision uint64
	// AuthUser is the login the request was authorized for, with
	// AuthRevision: apply checks against it what the node could not see
	// reliably at the check, the keys already attached to a lease that a
	// put attaches a key to or a revoke deletes.
	AuthUser string
	// AuthNoLogin marks a client request checked while auth was disabled:
	// it fails with ErrGRPCAuthOldRevision if auth is enabled when it
	// applies (the node then checks it again), so a request checked just
	// before an AuthEnable cannot apply after it unchecked.
	AuthNoLogin bool
	// Revision, if not zero, is the revision the command's writes take:
	// the leader of a data range stamps each command it appends with one
	// from the revision oracle (AppendRevision), in log order. Commands of
	// logs written before stamping have none: their writes take the
	// range's revision plus one.
	Revision uint64
}

const (
	fieldRangeID   protowire.Number = 1
	fieldProposer  protowire.Number = 2
	fieldRequestID protowire.Number = 3
	fieldKind      protowire.Number = 4
	fieldPayload   protowire.Number = 5
	fieldTerm      protowire.Number = 6
	fieldAuthRev   protowire.Number = 7
	fieldAuthUser  protowire.Number = 8
	fieldNoLogin   protowire.Number = 9
	fieldRevision  protowire.Number = 10
)

// Encode appends the encoding of c to dst.
func (c *Command) Encode(dst []byte) []byte {
	dst = slices.Grow(dst, c.Size())
	dst = protowire.AppendTag(dst, fieldRangeID, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(c.RangeID))
	dst = protowire.AppendTag(dst, fieldProposer, protowire.VarintType)
	dst = protowire.AppendVarint(dst, c.Proposer)
	dst = protowire.AppendTag(dst, fieldRequestID, protowire.VarintType)
	dst = protowire.AppendVarint(dst, c.RequestID)
	dst = protowire.AppendTag(dst, fieldKind, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(c.Kind))
	dst = protowire.AppendTag(dst, fieldPayload, protowire.BytesType)
	dst = protowire.AppendBytes(dst, c.Payload)
	if c.Term != 0 {
		dst = protowire.AppendTag(dst, fieldTerm, protowire.VarintType)
		dst = protowire.AppendVarint(dst, c.Term)
	}
	if c.AuthRevision != 0 {
		dst = protowire.AppendTag(dst, fieldAuthRev, protowire.VarintType)
		dst = protowire.AppendVarint(dst, c.AuthRevision)
	}
	if c.AuthUser != "" {
		dst = protowire.AppendTag(dst, fieldAuthUser, protowire.BytesType)
		dst = protowire.AppendString(dst, c.AuthUser)
	}
	if c.AuthNoLogin {
		dst = protowire.AppendTag(dst, fieldNoLogin, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 1)
	}
	if c.Revision != 0 {
		dst = protowire.AppendTag(dst, fieldRevision, protowire.VarintType)
		dst = protowire.AppendVarint(dst, c.Revision)
	}
	return dst
}

// Stamped reports whether commands of kind k are stamped with a revision
// when appended to a data range (Command.Revision): the kinds whose
// commands may write keys, which take their revision from it. Kinds of
// the services (100 and up) are stamped, as they may write keys too.
func (k Kind) Stamped() bool {
	switch k {
	case KindPut, KindDeleteRange, KindTxn, KindLeaseRevoke, KindLeaseRevoked:
		return true
	}
	return k >= KindQueueFirst
}

// Peek returns the kind of an encoded command and the term it is fenced
// to (Term), decoding nothing else; false if data is no command.
func Peek(data []byte) (kind Kind, term uint64, ok bool) {
	sawKind := false
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0, 0, false
		}
		data = data[n:]
		if typ == protowire.VarintType && (num == fieldKind || num == fieldTerm) {
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return 0, 0, false
			}
			if num == fieldKind {
				kind, sawKind = Kind(v), true
			} else {
				term = v
			}
			data = data[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return 0, 0, false
		}
		data = data[n:]
	}
	return kind, term, sawKind
}

// AppendRevision returns a copy of the encoded command data with its
// Revision set to rev (a field appended: the last one wins), leaving data
// as it is.
func AppendRevision(data []byte, rev uint64) []byte {
	out := make([]byte, len(data), len(data)+1+protowire.SizeVarint(rev))
	copy(out, data)
	out = protowire.AppendTag(out, fieldRevision, protowire.VarintType)
	return protowire.AppendVarint(out, rev)
}

// Size is the length of the command's encoding.
func (c *Command) Size() int {
	n := 5 + // one byte per tag
		protowire.SizeVarint(uint64(c.RangeID)) +
		protowire.SizeVarint(c.Proposer) +
		protowire.SizeVarint(c.RequestID) +
		protowire.SizeVarint(uint64(c.Kind)) +
		protowire.SizeBytes(len(c.Payload))
	if c.Term != 0 {
		n += 1 + protowire.SizeVarint(c.Term)
	}
	if c.AuthRevision != 0 {
		n += 1 + protowire.SizeVarint(c.AuthRevision)
	}
	if c.AuthUser != "" {
		n += 1 + protowire.SizeBytes(len(c.AuthUser))
	}
	if c.AuthNoLogin {
		n += 2
	}
	if c.Revision != 0 {
		n += 1 + protowire.SizeVarint(c.Revision)
	}
	return n
}

var errTruncated = errors.New("truncated command")

// fieldNumber is the one field of the payloads that are a single number.
const fieldNumber protowire.Number = 1

// EncodeTruncateLog is the payload of a KindTruncateLog command: the last
// index to remove.
func EncodeTruncateLog(index uint64) []byte { return encodeNumber(index) }

// DecodeTruncateLog parses the payload of a KindTruncateLog command.
func DecodeTruncateLog(payload []byte) (uint64, error) {
	return decodeNumber(payload, "truncate-log", "an index")
}

// EncodeOracleCeiling is the payload of a KindOracleCeiling command: the
// ceiling to raise the stored one to.
func EncodeOracleCeiling(ceiling uint64) []byte { return encodeNumber(ceiling) }

// DecodeOracleCeiling parses the payload of a KindOracleCeiling command.
func DecodeOracleCeiling(payload []byte) (uint64, error) {
	return decodeNumber(payload, "oracle-ceiling", "a ceiling")
}

func encodeNumber(v uint64) []byte {
	b := protowire.AppendTag(nil, fieldNumber, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// decodeNumber parses a payload made by encodeNumber; what names the
// command and the number in errors. Zero is refused: no such command
// carries it.
func decodeNumber(payload []byte, cmd, what string) (uint64, error) {
	var v uint64
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 {
			return 0, fmt.Errorf("decode %s tag: %w", cmd, protowire.ParseError(n))
		}
		payload = payload[n:]
		n = protowire.ConsumeFieldValue(num, typ, payload)
		if n < 0 {
			return 0, fmt.Errorf("decode %s field %d: %w", cmd, num, protowire.ParseError(n))
		}
		if num == fieldNumber && typ == protowire.VarintType {
			v, _ = protowire.ConsumeVarint(payload)
		}
		payload = payload[n:]
	}
	if v == 0 {
		return 0, fmt.Errorf("%s command without %s", cmd, what)
	}
	return v, nil
}

// Decode parses a command. The payload aliases data.
func Decode(data []byte) (Command, error) {
	var c Command
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return c, fmt.Errorf("decode command tag: %w", protowire.ParseError(n))
		}
		data = data[n:]
		switch {
		case typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return c, fmt.Errorf("decode command field %d: %w", num, protowire.ParseError(n))
			}
			data = data[n:]
			switch num {
			case fieldRangeID:
				c.RangeID = keys.RangeID(v)
			case fieldProposer:
				c.Proposer = v
			case fieldRequestID:
				c.RequestID = v
			case fieldKind:
				c.Kind = Kind(v)
			case fieldTerm:
				c.Term = v
			case fieldAuthRev:
				c.AuthRevision = v
			case fieldNoLogin:
				c.AuthNoLogin = v != 0
			case fieldRevision:
				c.Revision = v
			}
		case typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return c, fmt.Errorf("decode command field %d: %w", num, protowire.ParseError(n))
			}
			data = data[n:]
			switch num {
			case fieldPayload:
				c.Payload = v
			case fieldAuthUser:
				c.AuthUser = string(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return c, fmt.Errorf("decode command field %d: %w", num, protowire.ParseError(n))
			}
			data = data[n:]
		}
	}
	if c.RangeID == 0 || c.Kind == 0 {
		return c, errTruncated
	}
	return c, nil
}

// SystemState is the system state a data range keeps a copy of: the auth
// state (auth.EncodeMirror) and whether a NOSPACE alarm refuses writes, as
// of Index, the system range's applied index it was read at (copies apply
// only forward).
type SystemState struct {
	Index      uint64
	AuthMirror []byte
	NoSpace    bool
}

const (
	fieldSysIndex   protowire.Number = 1
	fieldSysAuth    protowire.Number = 2
	fieldSysNoSpace protowire.Number = 3
)

// EncodeSystemState encodes the payload of a KindSystemState command.
func EncodeSystemState(s SystemState) []byte {
	b := protowire.AppendTag(nil, fieldSysIndex, protowire.VarintType)
	b = protowire.AppendVarint(b, s.Index)
	b = protowire.AppendTag(b, fieldSysAuth, protowire.BytesType)
	b = protowire.AppendBytes(b, s.AuthMirror)
	if s.NoSpace {
		b = protowire.AppendTag(b, fieldSysNoSpace, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// DecodeSystemState parses the payload of a KindSystemState command (an
// empty one is the state of a new cluster). The result's AuthMirror is a slice
// of payload.
func DecodeSystemState(payload []byte) (SystemState, error) {
	var s SystemState
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 {
			return s, fmt.Errorf("decode system state tag: %w", protowire.ParseError(n))
		}
		payload = payload[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldSysIndex || num == fieldSysNoSpace):
			v, n := protowire.ConsumeVarint(payload)
			if n < 0 {
				return s, fmt.Errorf("decode system state: %w", protowire.ParseError(n))
			}
			payload = payload[n:]
			if num == fieldSysIndex {
				s.Index = v
			} else {
				s.NoSpace = v != 0
			}
		case typ == protowire.BytesType && num == fieldSysAuth:
			v, n := protowire.ConsumeBytes(payload)
			if n < 0 {
				return s, fmt.Errorf("decode system state: %w", protowire.ParseError(n))
			}
			payload = payload[n:]
			s.AuthMirror = v
		default:
			n := protowire.ConsumeFieldValue(num, typ, payload)
			if n < 0 {
				return s, fmt.Errorf("decode system state field %d: %w", num, protowire.ParseError(n))
			}
			payload = payload[n:]
		}
	}
	return s, nil
}
