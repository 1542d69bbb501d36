package limitsm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/limit/algo"
	"github.com/synod-io/synod/internal/raftcmd"
)

// The limiters' command kinds. Values are persisted in Raft logs: never
// reuse or renumber.
const (
	KindSet        = raftcmd.KindLimitFirst     // limitpb.SetLimit
	KindDelete     = raftcmd.KindLimitFirst + 1 // limitpb.DeleteLimit
	KindCheckpoint = raftcmd.KindLimitFirst + 2 // limitpb.Checkpoint, fenced to the owner's term
	KindAcquire    = raftcmd.KindLimitFirst + 3 // limitpb.Acquire
	KindRelease    = raftcmd.KindLimitFirst + 4 // limitpb.Release
)

// Bounds of names and keys.
const (
	MaxNameLen   = 128
	MaxKeyLen    = 1024
	MaxPermitLen = 64
	// DefaultTimeout is how long a decision waits for the owner by
	// default before it fails open or closed.
	DefaultTimeout = 2 * time.Second
	// DefaultSharePercent is the default local_share_percent.
	DefaultSharePercent = 5
)

// Prefix is the user-key prefix of everything of limit name.
func Prefix(name string) []byte {
	return append(append(append([]byte{}, keys.LimitPrefix...), name...), '/')
}

// DefKey is the key of a limit's definition.
func DefKey(name string) []byte { return append(Prefix(name), "def"...) }

// NameOfDefKey returns the limit name of a definition key, or false.
func NameOfDefKey(k []byte) (string, bool) {
	p := keys.LimitPrefix
	if len(k) < len(p)+len("/def")+1 || string(k[:len(p)]) != string(p) || string(k[len(k)-4:]) != "/def" {
		return "", false
	}
	name := string(k[len(p) : len(k)-4])
	return name, ValidName(name) == nil
}

// PermitPrefix is the prefix of the permits of a key of limit name.
func PermitPrefix(name string, key []byte) []byte {
	p := append(Prefix(name), "permit/"...)
	p = hex.AppendEncode(p, key)
	return append(p, '/')
}

// PermitKey is the key of a permit.
func PermitKey(name string, key []byte, permit string) []byte {
	return append(PermitPrefix(name, key), permit...)
}

// StateUserKey is the reserved user key a key's state is stored under (in
// the service state span).
func StateUserKey(name string, key []byte) []byte {
	return append(append(Prefix(name), "state/"...), key...)
}

// ParseStateUserKey returns the limit name and key of a StateUserKey.
func ParseStateUserKey(uk []byte) (name string, key []byte, ok bool) {
	p := keys.LimitPrefix
	if len(uk) <= len(p) || string(uk[:len(p)]) != string(p) {
		return "", nil, false
	}
	rest := uk[len(p):]
	for i, c := range rest {
		if c == '/' {
			if string(rest[i+1:min(len(rest), i+7)]) != "state/" {
				return "", nil, false
			}
			return string(rest[:i]), rest[i+7:], true
		}
	}
	return "", nil, false
}

// StatePrefix is the user-key prefix of the states of limit name.
func StatePrefix(name string) []byte { return append(Prefix(name), "state/"...) }

// ValidName checks a limit name: 1 to 128 of [A-Za-z0-9._-].
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("limit name must be 1 to %d characters", MaxNameLen)
	}
	for _, c := range []byte(name) {
		if !nameChar(c) {
			return fmt.Errorf("limit name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// ValidPermit checks a permit ID, as a limit name but up to 64 characters.
func ValidPermit(id string) error {
	if id == "" || len(id) > MaxPermitLen {
		return fmt.Errorf("permit ID must be 1 to %d characters", MaxPermitLen)
	}
	for _, c := range []byte(id) {
		if !nameChar(c) {
			return fmt.Errorf("permit ID %q: only letters, digits, '.', '_' and '-' are allowed", id)
		}
	}
	return nil
}

func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// Validate checks a definition and fills in its defaults.
func Validate(l *synodpb.Limit) error {
	if err := ValidName(l.Name); err != nil {
		return err
	}
	switch l.Mode {
	case synodpb.Limit_STRICT, synodpb.Limit_LOCAL, synodpb.Limit_SHADOW:
	default:
		return fmt.Errorf("unknown mode %d", l.Mode)
	}
	if l.TimeoutMs < 0 || l.LocalSharePercent < 0 || l.LocalSharePercent > 50 {
		return errors.New("timeout_ms must not be negative, local_share_percent between 0 and 50")
	}
	if l.TimeoutMs == 0 {
		l.TimeoutMs = DefaultTimeout.Milliseconds()
	}
	if l.LocalSharePercent == 0 {
		l.LocalSharePercent = DefaultSharePercent
	}
	if l.Algorithm == synodpb.Limit_CONCURRENCY {
		if l.Max < 1 || l.Max > algo.MaxLimit {
			return fmt.Errorf("a concurrency limit needs max between 1 and %d", int64(algo.MaxLimit))
		}
		if l.Limit != 0 || l.PeriodMs != 0 || l.Burst != 0 || l.CalendarUnit != synodpb.Limit_UNIT_NONE {
			return errors.New("a concurrency limit takes max only, no rate")
		}
		l.Mode = synodpb.Limit_STRICT // permits are always replicated
		return nil
	}
	if l.Max != 0 {
		return errors.New("max applies to concurrency limits")
	}
	if l.Algorithm != synodpb.Limit_CALENDAR_WINDOW && (l.CalendarUnit != synodpb.Limit_UNIT_NONE || l.TimeZone != "") {
		return errors.New("calendar_unit and time_zone apply to calendar windows")
	}
	_, err := Params(l)
	return err
}

// Params returns the algorithm's parameters of a rate limit.
func Params(l *synodpb.Limit) (algo.Params, error) {
	p := algo.Params{Limit: l.Limit, Period: l.PeriodMs * int64(time.Millisecond), Burst: l.Burst}
	switch l.Algorithm {
	case synodpb.Limit_GCRA:
		p.Kind = algo.GCRA
	case synodpb.Limit_SLIDING_WINDOW:
		p.Kind = algo.SlidingWindow
	case synodpb.Limit_FIXED_WINDOW:
		p.Kind = algo.FixedWindow
	case synodpb.Limit_CALENDAR_WINDOW:
		p.Kind = algo.CalendarWindow
		p.Unit = algo.Unit(l.CalendarUnit)
		if l.PeriodMs != 0 {
			return p, errors.New("a calendar window has a unit, not a period")
		}
		loc, err := time.LoadLocation(l.TimeZone)
		if err != nil {
			return p, fmt.Errorf("time zone %q: %w", l.TimeZone, err)
		}
		p.Location = loc
	default:
		return p, fmt.Errorf("algorithm %s has no rate", l.Algorithm)
	}
	if l.PeriodMs < 0 || l.PeriodMs > algo.MaxPeriod/int64(time.Millisecond) {
		return p, errors.New("period_ms out of range")
	}
	return p, p.Validate()
}

// SameState reports whether a key's state under definition a means the
// same under b: the same algorithm and windows (a change of rate, burst or
// mode keeps the keys' state; a change of algorithm or window resets it).
func SameState(a, b *synodpb.Limit) bool {
	if a.Algorithm != b.Algorithm {
		return false
	}
	if a.Algorithm == synodpb.Limit_GCRA || a.Algorithm == synodpb.Limit_CONCURRENCY {
		return true // a bucket's time means the same at any rate
	}
	return a.PeriodMs == b.PeriodMs && a.CalendarUnit == b.CalendarUnit && a.TimeZone == b.TimeZone
}
