package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/synod-io/synod/client"
)

// exitCodeError makes the synod command exit with code, printing nothing:
// `synod lock NAME -- CMD` exits with CMD's code.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// lockOptions are the flags of lock.
type lockOptions struct {
	ttl       int
	killAfter time.Duration
}

func (a *app) lockCmd() *cobra.Command {
	var o lockOptions
	cmd := &cobra.Command{
		Use:   "lock NAME [-- CMD ARGS...]",
		Short: "Hold a distributed lock, or run a command while holding it",
		Long: `Acquire the lock NAME (the same lock etcdctl lock and etcd's concurrency
package use) on a session whose lease lives --ttl seconds after its last
renewal.

With a command, run it only while the lock is held: it gets the lock's
fencing token in SYNOD_LOCK_TOKEN and its key in SYNOD_LOCK_KEY, so that its
writes can be guarded (a txn comparing CREATE(SYNOD_LOCK_KEY) with the token).
If the lock is lost (its lease ends), the command is sent SIGTERM, then
SIGKILL after --kill-after. synod exits with the command's exit code
(128+N if a signal N ended it) and releases the lock.

Without a command, print the lock's key and token and hold the lock until
interrupted; exit 1 if the lock is lost.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("%s takes NAME [-- CMD ARGS...], got no arguments", cmd.CommandPath())
			}
			if dash := cmd.ArgsLenAtDash(); dash >= 0 && dash != 1 || dash < 0 && len(args) != 1 {
				return usageErrorf("%s takes NAME [-- CMD ARGS...]: put the command after --", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := positive("ttl", o.ttl); err != nil {
				return err
			}
			if err := positive("kill-after", o.killAfter); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.withSession(ctx, o.ttl, func(s *client.Session) error {
				m := client.NewMutex(s, args[0])
				if err := m.Lock(ctx); err != nil {
					if ctx.Err() != nil {
						return nil // interrupted while waiting
					}
					return fmt.Errorf("lock %s: %w", args[0], err)
				}
				defer unlock(cmd.Context(), a, m)
				if len(args) == 1 {
					return a.holdLock(ctx, cmd, m)
				}
				return runLocked(ctx, cmd, m, args[1:], o.killAfter)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.ttl, "ttl", 10, "TTL in seconds of the session's lease: a holder that stops loses the lock this long after")
	f.DurationVar(&o.killAfter, "kill-after", 10*time.Second, "after SIGTERM, how long the command has before SIGKILL when the lock is lost")
	return cmd
}

// withSession connects and runs fn with a session of ttl seconds, closed
// (revoking its lease) when fn returns.
func (a *app) withSession(ctx context.Context, ttl int, fn func(*client.Session) error) error {
	return a.withSynodClient(ctx, func(c *client.Client) error {
		sctx, cancel := context.WithTimeout(ctx, a.opts.client.commandTimeout)
		s, err := c.NewSession(sctx, client.WithTTL(ttl))
		cancel()
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.client.commandTimeout)
			defer cancel()
			_ = s.Close(cctx) // the lease expires anyway
		}()
		return fn(s)
	})
}

// unlock releases m (if still held) even after an interrupt.
func unlock(ctx context.Context, a *app, m *client.Mutex) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.client.commandTimeout)
	defer cancel()
	_ = m.Unlock(ctx) // ErrNotHeld when lost: nothing to release
}

// holdLock prints the lock's key and token and waits for an interrupt, or
// the loss of the lock.
func (a *app) holdLock(ctx context.Context, cmd *cobra.Command, m *client.Mutex) error {
	lost := m.Lost()
	p := a.printer(cmd)
	if p.format == outputJSON {
		if err := p.jsonValue(map[string]any{"key": m.Key(), "token": m.Token()}); err != nil {
			return err
		}
	} else if err := p.write(fmt.Appendf(nil, "%s\ntoken %d\n", m.Key(), m.Token())); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-lost:
		return errors.New("lock lost: its session's lease ended or its key was deleted")
	}
}

// runLocked runs argv while m is held and returns its exit code as an
// exitCodeError (nil for 0).
func runLocked(ctx context.Context, cmd *cobra.Command, m *client.Mutex, argv []string, killAfter time.Duration) error {
	lost := m.Lost()
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	c.Env = append(os.Environ(),
		"SYNOD_LOCK_TOKEN="+strconv.FormatInt(m.Token(), 10),
		"SYNOD_LOCK_KEY="+m.Key())
	if err := c.Start(); err != nil {
		return fmt.Errorf("run %s: %w", argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }() // owned: ends when the command exits, which stop guarantees
	stop := func(why string) error {
		fmt.Fprintf(cmd.ErrOrStderr(), "synod lock: %s; stopping %s (SIGTERM)\n", why, argv[0])
		_ = c.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(killAfter)
		defer timer.Stop()
		select {
		case err := <-exited:
			return err
		case <-timer.C:
			fmt.Fprintf(cmd.ErrOrStderr(), "synod lock: %s still running after %s; SIGKILL\n", argv[0], killAfter)
			_ = c.Process.Kill()
			return <-exited
		}
	}
	var err error
	select {
	case err = <-exited:
	case <-lost:
		err = stop("lock lost")
	case <-ctx.Done():
		err = stop("interrupted")
	}
	return exitStatus(argv[0], err)
}

// exitStatus turns the result of Wait into the command's exit code.
func exitStatus(name string, err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("wait for %s: %w", name, err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitCodeError{128 + int(ws.Signal())}
	}
	return exitCodeError{ee.ExitCode()}
}

// jsonValue prints v as one line of JSON (for the outputs that are not
// etcd responses).
func (p *printer) jsonValue(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	return p.write(append(b, '\n'))
}

// leaseIDOf formats a lease ID as etcdctl does.
func leaseIDOf(id clientv3.LeaseID) string { return fmt.Sprintf("%016x", int64(id)) }
