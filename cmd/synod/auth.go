package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) authCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Enable, disable or show authentication (enable needs user root with role root)",
	}
	enable := &cobra.Command{
		Use:   "enable",
		Short: "Enable authentication",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.AuthEnable(ctx)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthEnableResponse)(resp), "Authentication Enabled")
			})
		},
	}
	disable := &cobra.Command{
		Use:   "disable",
		Short: "Disable authentication (needs root)",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.AuthDisable(ctx)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthDisableResponse)(resp), "Authentication Disabled")
			})
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether authentication is enabled, and the auth revision",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.AuthStatus(ctx)
				if err != nil {
					return err
				}
				return a.authResult(cmd, (*pb.AuthStatusResponse)(resp),
					fmt.Sprintf("Authentication Status: %v\nAuthRevision: %d", resp.Enabled, resp.AuthRevision))
			})
		},
	}
	cmd.AddCommand(enable, disable, status)
	return cmd
}
