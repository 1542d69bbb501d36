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
	return dst
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
	return n
}

var errTruncated = errors.New("truncated command")

const fieldTruncateIndex protowire.Number = 1

// EncodeTruncateLog is the payload of a KindTruncateLog command: the last
// index to remove.
func EncodeTruncateLog(index uint64) []byte {
	b := protowire.AppendTag(nil, fieldTruncateIndex, protowire.VarintType)
	return protowire.AppendVarint(b, index)
}

// DecodeTruncateLog parses the payload of a KindTruncateLog command.
func DecodeTruncateLog(payload []byte) (uint64, error) {
	var index uint64
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 {
			return 0, fmt.Errorf("decode truncate-log tag: %w", protowire.ParseError(n))
		}
		payload = payload[n:]
		n = protowire.ConsumeFieldValue(num, typ, payload)
		if n < 0 {
			return 0, fmt.Errorf("decode truncate-log field %d: %w", num, protowire.ParseError(n))
		}
		if num == fieldTruncateIndex && typ == protowire.VarintType {
			index, _ = protowire.ConsumeVarint(payload)
		}
		payload = payload[n:]
	}
	if index == 0 {
		return 0, errors.New("truncate-log command without an index")
	}
	return index, nil
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
