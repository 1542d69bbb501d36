package datarange

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/raftcmd"
)

// sysState is a data range's copy of the system state: the auth state its
// commands are checked against at apply time, as of the system range's
// applied index. Whether writes are refused for lack of space is in the
// applied state (NoSpace), which reads publish.
type sysState struct {
	index uint64
	auth  *auth.State
}

// loadSysState reads the range's copy of the system state (that of a new
// cluster if it never got one).
func loadSysState(r pebble.Reader, id keys.RangeID) (sysState, error) {
	ss, err := LoadSystemState(r, id)
	if err != nil {
		return sysState{}, fmt.Errorf("range %d: %w", id, err)
	}
	return decodeSysState(ss)
}

func decodeSysState(ss raftcmd.SystemState) (sysState, error) {
	st, err := auth.DecodeMirror(ss.AuthMirror)
	if err != nil {
		return sysState{}, err
	}
	return sysState{index: ss.Index, auth: st}, nil
}

// applySystemState takes a newer copy of the system state, which commands
// applied after it in this batch are checked against. An older copy (a
// retry that lost a race with a newer one) changes nothing.
func (a *batch) applySystemState(ss raftcmd.SystemState) error {
	if ss.Index <= a.sys.index {
		return nil
	}
	sys, err := decodeSysState(ss)
	if err != nil {
		// The same verdict on every replica: the command does nothing.
		return status.Error(codes.Internal, err.Error())
	}
	if err := a.b.Set(keys.RangeSystemStateKey(a.m.cfg.RangeID), raftcmd.EncodeSystemState(ss), nil); err != nil {
		return err
	}
	a.sys = sys
	a.st.NoSpace = ss.NoSpace
	return nil
}

// LoadSystemState reads a data range's copy of the system state, as the
// range applied it (to find a copy to bring up to date).
func LoadSystemState(r pebble.Reader, id keys.RangeID) (raftcmd.SystemState, error) {
	v, closer, err := r.Get(keys.RangeSystemStateKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return raftcmd.SystemState{}, nil
	}
	if err != nil {
		return raftcmd.SystemState{}, fmt.Errorf("read system state of range %d: %w", id, err)
	}
	defer closer.Close()
	// The decoded copy keeps slices of what it decodes, and v is Pebble's
	// until closer is closed.
	return raftcmd.DecodeSystemState(slices.Clone(v))
}
