package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/server"
)

func (a *app) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, check and restore backups",
		Long: `A backup is a consistent point-in-time copy of the data (keys with their
history, leases), taken from one endpoint while it serves. 'restore' creates
the data dir of a member of a new cluster from it; run it for every member,
with the same --initial-cluster and --peer-secret-file, then start them. A
backup never holds the peer secret of the cluster it was taken from.`,
	}
	cmd.AddCommand(a.snapshotSaveCmd(), a.snapshotStatusCmd(), a.snapshotRestoreCmd())
	return cmd
}

func (a *app) snapshotSaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a backup of the first endpoint to FILE",
		Args:  argsBetween(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			cli, err := a.opts.client.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			// A backup may take longer than a command: no --command-timeout.
			ctx := clientv3.WithRequireLeader(cmd.Context())
			rc, err := cli.Snapshot(ctx)
			if err != nil {
				return err
			}
			defer rc.Close()
			part := file + ".part"
			f, err := os.Create(part)
			if err != nil {
				return fmt.Errorf("create %s: %w", part, err)
			}
			n, err := io.Copy(f, rc)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(part)
				return fmt.Errorf("receive backup: %w", err)
			}
			h, pairs, err := server.VerifyBackup(part)
			if err != nil {
				os.Remove(part)
				return err
			}
			if err := os.Rename(part, file); err != nil {
				return err
			}
			return a.printer(cmd).write([]byte(fmt.Sprintf("Snapshot saved at %s (%s, %d pairs, revision %d)\n", file, formatBytes(n), pairs, h.Revision)))
		},
	}
}

func (a *app) snapshotStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status FILE",
		Short: "Check a backup and show what it holds",
		Args:  argsBetween(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, pairs, err := server.VerifyBackup(args[0])
			if err != nil {
				return err
			}
			st, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			return a.printer(cmd).write([]byte(fmt.Sprintf(
				"file %s\nsize %s\npairs %d\nrevision %d\ncompact revision %d\ncluster %x\nmember %x\n",
				args[0], formatBytes(st.Size()), pairs, h.Revision, h.CompactRevision, h.ClusterID, h.MemberID)))
		},
	}
}

func (a *app) snapshotRestoreCmd() *cobra.Command {
	var name, dataDir, initialCluster, token, peerAddr, secretFile string
	cmd := &cobra.Command{
		Use:   "restore FILE --data-dir DIR",
		Short: "Create a member's data dir for a new cluster from a backup",
		Args:  argsBetween(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				dataDir = name + ".synod"
			}
			if initialCluster != "" {
				if err := checkInitialCluster(initialCluster, name, peerAddr, ""); err != nil {
					return err
				}
			}
			var secret []byte
			if secretFile != "" {
				var err error
				if secret, err = readPeerSecretFile(secretFile); err != nil {
					return err
				}
			}
			h, err := server.Restore(server.RestoreConfig{
				Backup: args[0], DataDir: dataDir, Name: name,
				InitialCluster: initialCluster, ClusterToken: token, PeerURL: "http://" + peerAddr,
				PeerSecret: secret,
			})
			if err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			startFlags := ""
			if secret == nil && initialCluster != "" && strings.Contains(initialCluster, ",") {
				// The members of the new cluster need a shared secret.
				startFlags = " --peer-secret-file FILE"
			}
			return a.printer(cmd).write([]byte(fmt.Sprintf("Restored %s into %s at revision %d; start it with:\n  synod start --name %s --data-dir %s --peer-addr %s%s\n",
				args[0], dataDir, h.Revision, name, dataDir, peerAddr, startFlags)))
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "default", "name of this member in --initial-cluster")
	f.StringVar(&dataDir, "data-dir", "", `data dir to create, which must not exist or be empty; it is built in <data-dir>.restoring and renamed into place when complete (default "<name>.synod")`)
	f.StringVar(&initialCluster, "initial-cluster", "", "members of the new cluster (empty: a single-node cluster)")
	f.StringVar(&token, "cluster-token", "synod-cluster", "token of the new cluster")
	f.StringVar(&peerAddr, "peer-addr", "127.0.0.1:2380", "peer address of this member")
	f.StringVar(&secretFile, "peer-secret-file", "", "the new cluster's peer secret ('synod peer-secret new'), the same for every member (default: a single member makes its own; "+
		"the members of a larger cluster then take it, or peer TLS, when they start)")
	return cmd
}
