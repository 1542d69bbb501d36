package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/synod-io/synod/internal/server"
)

// Version is the version of this Synod build.
const Version = "0.1.0-dev"

// Exit codes of the synod command.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed
	exitUsage = 2 // bad flags or arguments: nothing was done
)

// usageError marks an error in the flags or arguments of a command.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// globalOptions are the flags shared by every command.
type globalOptions struct {
	client   clientOptions
	writeOut string
}

// app is one invocation of the synod command.
type app struct {
	opts globalOptions
	// started is set once flags and arguments are parsed and validated:
	// an error before that is a usage error.
	started bool
}

// run executes the synod command with args and returns its exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ue usageError
	var ec exitCodeError
	switch {
	case errors.As(err, &ec):
		return ec.code // synod lock NAME -- CMD: CMD's exit code
	case !a.started && cmd != nil && cmd.HasParent():
		// Cobra rejected the flags or arguments of a command: show its
		// usage, then the error where the eye lands.
		fmt.Fprint(stderr, cmd.UsageString())
		fmt.Fprintf(stderr, "\nError: %s\n", errorMessage(err))
		return exitUsage
	case !a.started || errors.As(err, &ue):
		fmt.Fprintf(stderr, "Error: %s\n", errorMessage(err))
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	fmt.Fprintf(stderr, "Error: %s\n", errorMessage(err))
	return exitError
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "synod",
		Short: "Synod: a Raft-replicated key-value store serving the etcd v3 API",
		Long: `Synod is a Raft-replicated key-value store that serves the etcd v3 gRPC API.

Start a local three-node cluster with 'synod demo', then talk to it with the
client commands (put, get, del, txn, ...) or with etcdctl.`,
		// run prints errors, and the usage to stderr (cobra would print it
		// to stdout).
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// Flags and arguments are valid: a later error is a runtime
			// error, which must not dump the usage.
			a.started = true
			if _, err := parseOutputFormat(a.opts.writeOut); err != nil {
				return err
			}
			return a.opts.client.validate()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	a.opts.client.addFlags(pf)
	pf.StringVarP(&a.opts.writeOut, "write-out", "w", string(outputSimple), "output format: simple or json")

	root.AddCommand(
		a.startCmd(),
		a.demoCmd(),
		a.putCmd(),
		a.getCmd(),
		a.delCmd(),
		a.txnCmd(),
		a.compactCmd(),
		a.watchCmd(),
		a.lockCmd(),
		a.electCmd(),
		a.groupCmd(),
		a.limitCmd(),
		a.queueCmd(),
		a.leaseCmd(),
		a.membersCmd(),
		a.rangesCmd(),
		a.rangeCmd(),
		a.memberCmd(),
		a.snapshotCmd(),
		a.alarmCmd(),
		a.defragCmd(),
		a.moveLeaderCmd(),
		a.hashKVCmd(),
		a.statusCmd(),
		a.versionCmd(),
		a.userCmd(),
		a.roleCmd(),
		a.authCmd(),
		a.certCmd(),
		a.peerSecretCmd(),
	)
	return root
}

// printer returns the printer for the command's output.
func (a *app) printer(cmd *cobra.Command) *printer {
	f, _ := parseOutputFormat(a.opts.writeOut) // validated before RunE
	return &printer{w: cmd.OutOrStdout(), format: f}
}

// argsBetween accepts min to max positional arguments, described by names
// ("KEY [RANGE_END]") in the error message.
func argsBetween(minArgs, maxArgs int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= minArgs && len(args) <= maxArgs {
			return nil
		}
		if names == "" {
			return usageErrorf("%s takes no arguments, got %s", cmd.CommandPath(), quoteArgs(args))
		}
		return usageErrorf("%s takes %s, got %d argument%s", cmd.CommandPath(), names, len(args), plural(len(args)))
	}
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, s := range args {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, " ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// apiVersion is the etcd API version served, as major.minor.
func apiVersion() string {
	parts := strings.SplitN(server.APIVersion, ".", 3)
	if len(parts) < 2 {
		return server.APIVersion
	}
	return parts[0] + "." + parts[1]
}

// positive checks that a numeric flag is above zero.
func positive[T int | int64 | uint64 | time.Duration](flag string, v T) error {
	if v <= 0 {
		return usageErrorf("--%s must be positive, got %v", flag, v)
	}
	return nil
}
