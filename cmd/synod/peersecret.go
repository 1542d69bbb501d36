package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/internal/peerauth"
	"github.com/synod-io/synod/internal/server"
)

func (a *app) peerSecretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peer-secret",
		Short: "Make or fetch the secret that members prove to each other",
		Long: `Without peer TLS, the members of a cluster authenticate every connection
between them with the cluster's peer secret: a caller that cannot prove it
holds the secret gets nothing from the peer port. The secret authenticates;
it does not encrypt (use peer TLS for that).

A single-node cluster, 'synod demo' and a node started with --join need no
file: the secret is made, or fetched over the client API, and kept in each
member's data dir. Give the same --peer-secret-file to every member when
starting a cluster of several members in separate processes, and to a member
added with 'member add' (--initial-cluster-state existing):

  synod peer-secret new secret.hex        # once, then copy it to every member
  synod start --name n1 ... --initial-cluster ... --peer-secret-file secret.hex`,
	}
	cmd.AddCommand(a.peerSecretNewCmd(), a.peerSecretGetCmd())
	return cmd
}

func (a *app) peerSecretNewCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "new [FILE]",
		Short: "Make a new random peer secret, into FILE (mode 0600) or to stdout",
		Args:  argsBetween(0, 1, "[FILE]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			secret, err := peerauth.NewSecret()
			if err != nil {
				return err
			}
			return writeSecret(cmd, args, secret)
		},
	}
}

func (a *app) peerSecretGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get [FILE]",
		Short: "Fetch a running cluster's peer secret (root only with auth), into FILE (mode 0600) or to stdout",
		Args:  argsBetween(0, 1, "[FILE]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				secret, err := server.FetchPeerSecret(ctx, cli.ActiveConnection())
				if err != nil {
					return err
				}
				return writeSecret(cmd, args, secret)
			})
		},
	}
}

// writeSecret writes a secret's text form to the file args names (created
// with mode 0600, never overwritten), or to stdout.
func writeSecret(cmd *cobra.Command, args []string, secret []byte) error {
	text := peerauth.Format(secret)
	if len(args) == 0 {
		_, err := cmd.OutOrStdout().Write(text)
		return err
	}
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create the secret file: %w", err)
	}
	_, err = f.Write(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(args[0])
		return fmt.Errorf("write the secret file: %w", err)
	}
	return nil
}

// readPeerSecretFile reads --peer-secret-file.
func readPeerSecretFile(path string) ([]byte, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErrorf("--peer-secret-file: %v", err)
	}
	secret, err := peerauth.Parse(text)
	if err != nil {
		return nil, usageErrorf("--peer-secret-file %s: %v (make one with 'synod peer-secret new FILE')", path, err)
	}
	return secret, nil
}

// warnLoosePermissions warns when others than the owner may read the
// secret file.
func warnLoosePermissions(logger *slog.Logger, path string) {
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return
	}
	logger.Warn("the peer secret file can be read by others than its owner: whoever reads it can join the cluster's peer traffic; chmod 600 it",
		"file", path, "mode", st.Mode().Perm().String())
}

// dataDirIsNew reports whether a data dir does not exist yet.
func dataDirIsNew(dir string) bool {
	_, err := os.Stat(dir)
	return errors.Is(err, fs.ErrNotExist)
}
