package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// permRange turns KEY [RANGE_END] and --prefix/--from-key into etcd's
// (key, range_end).
func permRange(args []string, prefix, fromKey bool) (key, end string, err error) {
	key = args[0]
	switch {
	case prefix && fromKey:
		return "", "", usageErrorf("--prefix and --from-key exclude each other")
	case len(args) == 2 && (prefix || fromKey):
		return "", "", usageErrorf("RANGE_END cannot be combined with --prefix or --from-key")
	case len(args) == 2:
		return key, args[1], nil
	case prefix:
		return key, clientv3.GetPrefixRangeEnd(key), nil
	case fromKey:
		return key, "\x00", nil
	}
	return key, "", nil
}

func (a *app) roleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role",
		Short: "Manage roles (add, get, list, delete, grant-permission, revoke-permission)",
	}
	simple := func(use, short, done string, call func(ctx context.Context, cli *clientv3.Client, name string) (any, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ROLE",
			Short: short,
			Args:  argsBetween(1, 1, "ROLE"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := call(ctx, cli, args[0])
					if err != nil {
						return err
					}
					switch r := resp.(type) {
					case *clientv3.AuthRoleAddResponse:
						return a.authResult(cmd, (*pb.AuthRoleAddResponse)(r), fmt.Sprintf(done, args[0]))
					case *clientv3.AuthRoleDeleteResponse:
						return a.authResult(cmd, (*pb.AuthRoleDeleteResponse)(r), fmt.Sprintf(done, args[0]))
					}
					return nil
				})
			},
		}
	}
	add := simple("add", "Add a role", "Role %s created", func(ctx context.Context, cli *clientv3.Client, n string) (any, error) {
		return cli.RoleAdd(ctx, n)
	})
	del := simple("delete", "Delete a role (and take it from every user)", "Role %s deleted", func(ctx context.Context, cli *clientv3.Client, n string) (any, error) {
		return cli.RoleDelete(ctx, n)
	})
	get := &cobra.Command{
		Use:   "get ROLE",
		Short: "Show a role's permissions",
		Args:  argsBetween(1, 1, "ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.RoleGet(ctx, args[0])
				if err != nil {
					return err
				}
				var b strings.Builder
				fmt.Fprintf(&b, "Role %s\nKV Read:", args[0])
				for _, want := range []string{"READ", "WRITE"} {
					if want == "WRITE" {
						b.WriteString("\nKV Write:")
					}
					for _, p := range resp.Perm {
						t := p.PermType.String()
						if t != want && t != "READWRITE" {
							continue
						}
						fmt.Fprintf(&b, "\n\t%s", describePerm(string(p.Key), string(p.RangeEnd)))
					}
				}
				return a.authResult(cmd, (*pb.AuthRoleGetResponse)(resp), b.String())
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List roles",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.RoleList(ctx)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthRoleListResponse)(resp), strings.Join(resp.Roles, "\n"))
			})
		},
	}
	var prefix, fromKey bool
	grant := &cobra.Command{
		Use:   "grant-permission ROLE read|write|readwrite KEY [RANGE_END]",
		Short: "Grant a role read, write or readwrite permission on a key, a range or a prefix",
		Args:  argsBetween(3, 4, "ROLE read|write|readwrite KEY [RANGE_END]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t clientv3.PermissionType
			switch strings.ToLower(args[1]) {
			case "read":
				t = clientv3.PermissionType(clientv3.PermRead)
			case "write":
				t = clientv3.PermissionType(clientv3.PermWrite)
			case "readwrite":
				t = clientv3.PermissionType(clientv3.PermReadWrite)
			default:
				return usageErrorf("permission type must be read, write or readwrite, got %q", args[1])
			}
			key, end, err := permRange(args[2:], prefix, fromKey)
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.RoleGrantPermission(ctx, args[0], key, end, t)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthRoleGrantPermissionResponse)(resp), "Role "+args[0]+" updated")
			})
		},
	}
	grant.Flags().BoolVar(&prefix, "prefix", false, "grant on every key with prefix KEY")
	grant.Flags().BoolVar(&fromKey, "from-key", false, "grant on every key at or after KEY")
	var rprefix, rfromKey bool
	revoke := &cobra.Command{
		Use:   "revoke-permission ROLE KEY [RANGE_END]",
		Short: "Revoke a permission from a role (named as it was granted)",
		Args:  argsBetween(2, 3, "ROLE KEY [RANGE_END]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, end, err := permRange(args[1:], rprefix, rfromKey)
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.RoleRevokePermission(ctx, args[0], key, end)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthRoleRevokePermissionResponse)(resp), "Permission of "+describePerm(key, end)+" is revoked from role "+args[0])
			})
		},
	}
	revoke.Flags().BoolVar(&rprefix, "prefix", false, "the permission on prefix KEY")
	revoke.Flags().BoolVar(&rfromKey, "from-key", false, "the permission on every key at or after KEY")
	cmd.AddCommand(add, get, list, del, grant, revoke)
	return cmd
}

// describePerm prints a permission's keys as etcdctl does.
func describePerm(key, end string) string {
	switch {
	case end == "":
		return key
	case end == "\x00":
		return fmt.Sprintf("[%s, <open ended>", key)
	case end == clientv3.GetPrefixRangeEnd(key):
		return fmt.Sprintf("[%s, %s) (prefix %s)", key, end, key)
	}
	return fmt.Sprintf("[%s, %s)", key, end)
}
