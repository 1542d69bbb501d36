package server

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/synod-io/synod/internal/auth"
	"github.com/synod-io/synod/internal/backup"
	"github.com/synod-io/synod/internal/keys"
	"github.com/synod-io/synod/internal/kv"
	"github.com/synod-io/synod/internal/lease"
	"github.com/synod-io/synod/internal/mvcc"
	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/raftcmd"
	"github.com/synod-io/synod/internal/replica"
	"github.com/synod-io/synod/internal/storage"
)

// RestoreConfig describes the member a backup is restored into.
type RestoreConfig struct {
	// Backup is the path of the backup file.
	Backup string
	// DataDir must not hold a member yet.
	DataDir string
	FS      vfs.FS
	// Name, InitialCluster and ClusterToken describe the new cluster, as
	// for Open; every member of it is restored from the same backup.
	Name           string
	InitialCluster string
	ClusterToken   string
	// PeerURL is this member's peer URL when InitialCluster is empty (a
	// single-node cluster).
	PeerURL string
	// PeerSecret is the new cluster's peer secret, stored in the data dir
	// (see Config.PeerSecret). nil: a single-member cluster makes its own;
	// the members of a larger one are given it when they start (or use
	// peer TLS). The backup never holds the old cluster's.
	PeerSecret []byte
	Logger     *slog.Logger
}

// Restore creates the data dir of a member of a new cluster whose data is a
// backup's: the KV state with its history and revision counters, the leases
// and the auth state. Membership comes from InitialCluster, not from the
// backup, as etcd's restore does. The backup is verified in full before anything is written.
//
// The data dir appears whole or not at all: it is built next to DataDir (in
// DataDir + ".restoring"), synced, and renamed into place. A restore that is
// interrupted leaves only that directory, which makes Open refuse DataDir
// until a restore is run again (it starts over). DataDir must not exist, or
// be empty.
func Restore(cfg RestoreConfig) (backup.Header, error) {
	if cfg.PeerSecret != nil {
		if err := peerauth.CheckSecret(cfg.PeerSecret); err != nil {
			return backup.Header{}, fmt.Errorf("peer secret: %w", err)
		}
	}
	if cfg.ClusterToken == "" {
		cfg.ClusterToken = "synod-cluster"
	}
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	fs := fsOrDefault(cfg.FS)
	h, pairs, err := verifyBackup(cfg.Backup)
	if err != nil {
		return h, err
	}
	target := filepath.Clean(cfg.DataDir)
	names, err := fs.List(target)
	exists := err == nil
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return h, fmt.Errorf("read data dir %s: %w", target, err)
	case len(names) > 0:
		return h, fmt.Errorf("data dir %s already exists and is not empty: restore into a new directory", target)
	}
	tmp := restoringDir(target)
	if _, err := fs.Stat(tmp); err == nil {
		if cfg.Logger != nil {
			cfg.Logger.Info("removing what an interrupted restore left", "dir", tmp)
		}
		if err := fs.RemoveAll(tmp); err != nil {
			return h, fmt.Errorf("remove %s: %w", tmp, err)
		}
	}
	spec := cfg.InitialCluster
	if spec == "" {
		spec = cfg.Name + "=" + cfg.PeerURL
	}
	secret, err := newClusterSecret(cfg.PeerSecret, spec)
	if err != nil {
		return h, err
	}
	if err := restoreInto(cfg, fs, tmp, h, spec, secret); err != nil {
		_ = fs.RemoveAll(tmp)
		return h, err
	}
	if exists {
		// An empty directory in the way of the rename.
		if err := fs.Remove(target); err != nil {
			return h, fmt.Errorf("remove the empty %s: %w", target, err)
		}
	}
	if err := fs.Rename(tmp, target); err != nil {
		return h, fmt.Errorf("move the restored data dir into place: %w", err)
	}
	if err := syncDir(fs, fs.PathDir(target)); err != nil {
		return h, fmt.Errorf("sync %s: %w", fs.PathDir(target), err)
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("restored backup", "pairs", pairs, "revision", h.Revision, "data-dir", target)
	}
	return h, nil
}

// restoreInto writes the restored member's data dir at dir, synced.
func restoreInto(cfg RestoreConfig, fs vfs.FS, dir string, h backup.Header, spec string, secret []byte) error {
	db, err := storage.Open(storage.Options{Dir: dir, FS: cfg.FS, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	data := db.NewBatch()
	// The auth state, which the data range needs a copy of, is read back
	// from a batch of its own (small; never committed).
	authState := db.NewIndexedBatch()
	err = func() error {
		defer data.Close()
		defer authState.Close()
		keep := restoredSpans()
		authSpan := keys.AuthSpan()
		f, err := os.Open(cfg.Backup) // backups are on the OS's file system
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := backup.Read(f, func(k, v []byte) error {
			for _, sp := range keep {
				if bytes.Compare(k, sp.Start) >= 0 && bytes.Compare(k, sp.End) < 0 {
					if bytes.Compare(k, authSpan.Start) >= 0 && bytes.Compare(k, authSpan.End) < 0 {
						if err := authState.Set(k, v, nil); err != nil {
							return err
						}
					}
					return data.Set(k, v, nil)
				}
			}
			return nil // membership, alarms and Raft state are the new cluster's
		}); err != nil {
			return fmt.Errorf("read backup: %w", err)
		}
		if err := putSystemStateCopy(data, authState); err != nil {
			return err
		}
		id, err := bootstrapCluster(data, cfg.Name, spec, cfg.ClusterToken,
			kv.Meta{Revision: h.Revision, CompactRevision: h.CompactRevision}, secret, nil)
		if err != nil {
			return err
		}
		if err := attachLeasedKeys(db); err != nil {
			return fmt.Errorf("attach the restored keys to their leases: %w", err)
		}
		if err := db.Flush(); err != nil {
			return fmt.Errorf("flush restored data: %w", err)
		}
		_, err = writeMemberFile(fs, dir, id)
		return err
	}()
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close restored data: %w", cerr)
	}
	return err
}

// restoredSpans are the parts of a backup a restore keeps: user data,
// leases and the auth state (users, roles, whether auth is enabled), as
// etcd's restore keeps them, and the services' state kept beside their keys
// (the rate limiters' checkpoints). Membership, alarms and Raft state are
// the new cluster's. Which keys a lease holds is rebuilt from the keys
// (attachLeasedKeys), not read from the backup: a backup of several ranges
// holds the keys as of its revision and the leases' attachments as the
// first range last applied them.
func restoredSpans() []keys.Span {
	return []keys.Span{keys.MVCCSpan(), keys.LeaseSpan(), keys.AuthSpan(), keys.ServiceStateSpan()}
}

// attachLeasedKeys attaches every live key of the restored store that names
// a lease to that lease. A lease it names that the backup does not hold
// (a backup of several ranges holds the keys as of its revision, and the
// lease records as the first range last applied them: revoked since) is
// granted again with the shortest TTL, so that its keys go soon after the
// restored cluster starts, as they went after the backup's revision.
func attachLeasedKeys(db *pebble.DB) error {
	b := db.NewBatch()
	defer func() { b.Close() }()
	exists := map[int64]bool{}
	var cur []byte // the user key being read (versions come key by key)
	var curRev, curLease int64
	flush := func() error {
		if cur == nil || curLease == 0 {
			return nil
		}
		ok, seen := exists[curLease]
		if !seen {
			var err error
			if _, ok, err = lease.Get(db, curLease); err != nil {
				return err
			}
			if !ok {
				if err := (lease.Table{RW: b}).Put(lease.Record{ID: curLease, TTL: 1}); err != nil {
					return err
				}
			}
			exists[curLease] = true
		}
		if err := b.Set(keys.LeaseAttachmentKey(curLease, cur), nil, nil); err != nil {
			return err
		}
		if b.Len() >= 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = db.NewBatch()
		}
		return nil
	}
	if err := mvcc.ChangesSince(db, nil, nil, 0, func(ch mvcc.Change) error {
		if !bytes.Equal(ch.KV.Key, cur) {
			if err := flush(); err != nil {
				return err
			}
			cur, curRev = bytes.Clone(ch.KV.Key), 0
		}
		if ch.KV.ModRevision > curRev {
			curRev, curLease = ch.KV.ModRevision, 0
			if ch.Type == mvccpb.PUT {
				curLease = ch.KV.Lease
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// putSystemStateCopy stages in b the data range's copy of the restored
// system state (its auth state, read from r), as of the system range's
// bootstrap index, so that the restored cluster checks writes against the
// restored users and roles from its first command.
func putSystemStateCopy(b *pebble.Batch, r pebble.Reader) error {
	st, err := auth.Load(r)
	if err != nil {
		return fmt.Errorf("restored auth state: %w", err)
	}
	mirror, err := auth.EncodeMirror(st)
	if err != nil {
		return err
	}
	ss := raftcmd.SystemState{Index: replica.InitialIndex, AuthMirror: mirror}
	return b.Set(keys.RangeSystemStateKey(keys.FirstDataRangeID), raftcmd.EncodeSystemState(ss), nil)
}

func verifyBackup(path string) (backup.Header, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return backup.Header{}, 0, err
	}
	defer f.Close()
	h, n, err := backup.Verify(f)
	if err != nil {
		return h, n, fmt.Errorf("verify backup %s: %w", path, err)
	}
	return h, n, nil
}

// VerifyBackup checks a backup file and returns its header and pair count.
func VerifyBackup(path string) (backup.Header, int, error) { return verifyBackup(path) }
