package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) userCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage users (add, get, list, delete, passwd, grant-role, revoke-role)",
	}
	var newPassword string
	var noPassword bool
	add := &cobra.Command{
		Use:   "add NAME[:PASSWORD]",
		Short: "Add a user; without :PASSWORD or --new-user-password the password is read from stdin",
		Args:  argsBetween(1, 1, "NAME[:PASSWORD]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, password := strings.SplitN(args[0], ":", 2)[0], ""
			if !noPassword {
				var err error
				if name, password, err = readPassword(cmd, args[0], newPassword, "Password of "+name+": "); err != nil {
					return err
				}
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				var resp *clientv3.AuthUserAddResponse
				var err error
				if noPassword {
					resp, err = cli.UserAddWithOptions(ctx, name, "", &clientv3.UserAddOptions{NoPassword: true})
				} else {
					resp, err = cli.UserAdd(ctx, name, password)
				}
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthUserAddResponse)(resp), "User "+name+" created")
			})
		},
	}
	add.Flags().StringVar(&newPassword, "new-user-password", "", "the new user's password")
	add.Flags().BoolVar(&noPassword, "no-password", false, "a user without password (authenticates with a TLS client certificate only)")

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a user's roles",
		Args:  argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.UserGet(ctx, args[0])
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthUserGetResponse)(resp), "User: "+args[0]+"\nRoles: "+strings.Join(resp.Roles, " "))
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.UserList(ctx)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthUserListResponse)(resp), strings.Join(resp.Users, "\n"))
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a user",
		Args:  argsBetween(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.UserDelete(ctx, args[0])
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthUserDeleteResponse)(resp), "User "+args[0]+" deleted")
			})
		},
	}
	var passwd string
	pw := &cobra.Command{
		Use:   "passwd NAME[:PASSWORD]",
		Short: "Change a user's password",
		Args:  argsBetween(1, 1, "NAME[:PASSWORD]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, password, err := readPassword(cmd, args[0], passwd, "New password: ")
			if err != nil {
				return err
			}
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.UserChangePassword(ctx, name, password)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthUserChangePasswordResponse)(resp), "Password updated")
			})
		},
	}
	pw.Flags().StringVar(&passwd, "new-user-password", "", "the new password")
	grant := &cobra.Command{
		Use:   "grant-role USER ROLE",
		Short: "Grant a role to a user",
		Args:  argsBetween(2, 2, "USER ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.UserGrantRole(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthUserGrantRoleResponse)(resp), "Role "+args[1]+" is granted to user "+args[0])
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke-role USER ROLE",
		Short: "Revoke a role from a user",
		Args:  argsBetween(2, 2, "USER ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.UserRevokeRole(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthUserRevokeRoleResponse)(resp), "Role "+args[1]+" is revoked from user "+args[0])
			})
		},
	}
	cmd.AddCommand(add, get, list, del, pw, grant, revoke)
	return cmd
}
