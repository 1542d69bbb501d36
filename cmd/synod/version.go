package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of Synod and of the etcd API it serves",
		Args:  argsBetween(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			p := a.printer(cmd)
			if p.format == outputJSON {
				b, err := json.Marshal(struct {
					Version    string `json:"synod_version"`
					APIVersion string `json:"api_version"`
				}{Version, apiVersion()})
				if err != nil {
					return err
				}
				return p.write(append(b, '\n'))
			}
			return p.write(fmt.Appendf(nil, "synod version: %s\nAPI version: %s\n", Version, apiVersion()))
		},
	}
}
