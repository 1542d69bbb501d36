package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/synod-io/synod/internal/keys"
)

// ErrDataLost is reported when this member's data is gone while its cluster
// still counts on it: its data dir was deleted or replaced while it ran, or
// it started again with an empty one. Its Raft log lacks entries it had
// acknowledged; if it went on, it could help commit something twice or vote
// twice in one term. It must leave the cluster and come back empty.
var ErrDataLost = errors.New("this member's data is gone: remove it from the cluster and add it again " +
	"with an empty data dir (synod member remove, then synod start --join), or restore a backup")

// memberFile is the file, in a data dir, that says it holds a member: it
// is written once the member's identity is committed (by a first start, a
// join, or a restore). While the member runs, it is checked to still be the
// file it was at start: a data dir deleted or replaced under a running
// member is noticed (Pebble keeps writing to its open files, which no
// longer have a name).
const memberFile = "synod-member"

// restoringSuffix names the directory a restore builds the data dir in,
// next to it, before renaming it into place.
const restoringSuffix = ".restoring"

// restoringDir is where a restore into dir builds it.
func restoringDir(dir string) string { return filepath.Clean(dir) + restoringSuffix }

func fsOrDefault(fs vfs.FS) vfs.FS {
	if fs == nil {
		return vfs.Default
	}
	return fs
}

// inspectDataDir refuses a data dir that a restore did not finish, and
// reports whether dir already holds a Pebble instance.
func inspectDataDir(fs vfs.FS, dir string) (bool, error) {
	if _, err := fs.Stat(restoringDir(dir)); err == nil {
		return false, fmt.Errorf("a restore into %s did not finish (%s is left): run 'synod snapshot restore' again, which starts over, or remove %s",
			dir, restoringDir(dir), restoringDir(dir))
	}
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(names) == 0) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read data dir %s: %w", dir, err)
	}
	desc, err := pebble.Peek(dir, fs)
	if err != nil {
		return false, fmt.Errorf("inspect data dir %s: %w", dir, err)
	}
	return desc.Exists, nil
}

// listIfExists lists dir, or returns nil if it does not exist.
func listIfExists(fs vfs.FS, dir string) ([]string, error) {
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read data dir %s: %w", dir, err)
	}
	return names, nil
}

// discardNewStorage closes the storage a first start opened and removes
// what it created in the data dir (every entry not among before), after
// the first start failed before committing an identity: a start with
// corrected flags is then a first start again. Files the data dir held
// before (a mount point's lost+found, certificates) are kept.
func (s *Server) discardNewStorage(before []string) {
	if s.db != nil {
		_ = s.db.Close()
		s.db = nil
	}
	keep := map[string]bool{}
	for _, n := range before {
		keep[n] = true
	}
	names, err := s.fs.List(s.cfg.DataDir)
	if err != nil {
		return
	}
	for _, n := range names {
		if !keep[n] {
			if err := s.fs.RemoveAll(s.fs.PathJoin(s.cfg.DataDir, n)); err != nil {
				s.cfg.Logger.Warn("remove what a failed first start created", "path", n, "err", err)
			}
		}
	}
}

// checkDataDir refuses a data dir that holds a Pebble instance but no
// member: a first start, join or restore (by an older Synod, which wrote
// in place) stopped before it was complete. Starting a new member on it
// would serve an empty store where data was expected.
func (s *Server) checkDataDir(existed bool) error {
	_, found, err := loadIdent(s.db)
	if err != nil || found || !existed {
		return err
	}
	return fmt.Errorf("data dir %s is not a complete member's data dir (it holds storage but no member identity: "+
		"a first start or a restore was interrupted): remove it, then restore the backup again or start the member afresh", s.cfg.DataDir)
}

// checkDataNotLost refuses to start a member that found its data gone
// (ErrDataLost) on an earlier run.
func (s *Server) checkDataNotLost() error {
	v, closer, err := s.db.Get(keys.NodeDataLostKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read data-lost mark: %w", err)
	}
	defer closer.Close()
	return fmt.Errorf("member %x of cluster %x found its data gone on an earlier run (%s): %w",
		s.id.MemberID, s.id.ClusterID, v, ErrDataLost)
}

// recordDataLost marks the data dir so that later starts refuse at once.
func (s *Server) recordDataLost(cause error) {
	if err := s.db.Set(keys.NodeDataLostKey(), []byte(cause.Error()), pebble.Sync); err != nil {
		s.logger.Error("record that this member's data is gone", "err", err)
	}
}

// writeMemberFile writes the member file of a data dir whose identity is
// committed, if it lacks one (a new data dir, or one from before the file
// existed), and returns its identity for watchDataDir.
func writeMemberFile(fs vfs.FS, dir string, id ident) (fileID, error) {
	path := fs.PathJoin(dir, memberFile)
	if fi, err := fs.Stat(path); err == nil {
		return fileIDOf(fi), nil
	}
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fileID{}, fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = io.WriteString(f, fmt.Sprintf("synod member %x of cluster %x (%s)\n", id.MemberID, id.ClusterID, id.Name))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(fs, dir)
	}
	if err != nil {
		return fileID{}, fmt.Errorf("write %s: %w", path, err)
	}
	fi, err := fs.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	return fileIDOf(fi), nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// dataDirCheckInterval is how often a running member checks that its data
// dir is still there.
const dataDirCheckInterval = time.Second

// watchDataDir stops the member if its data dir is deleted or replaced while
// it runs: Pebble would go on writing, and the member acknowledging, into
// files without a name, which the next start would not find. The member's
// replicas stop at once (no more acknowledgements), and Fatal reports
// ErrDataLost.
func (s *Server) watchDataDir(ctx context.Context) {
	t := time.NewTicker(dataDirCheckInterval)
	defer t.Stop()
	path := s.fs.PathJoin(s.cfg.DataDir, memberFile)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := s.fs.Stat(path)
		var why string
		switch {
		case errors.Is(err, os.ErrNotExist):
			why = "was deleted"
		case err != nil:
			continue // an unreadable file is not a missing one
		case !fileIDOf(fi).same(s.memberFileID):
			why = "was replaced"
		default:
			continue
		}
		err = fmt.Errorf("data dir %s %s while the member ran: %w", s.cfg.DataDir, why, ErrDataLost)
		s.logger.Error("stopping: data dir gone", "err", err)
		s.store.Close() // no acknowledgement more
		s.onFatal(err)
		s.stopClientAPI()
		return
	}
}
