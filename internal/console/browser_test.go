package console_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	"github.com/synod-io/synod/api/queuepb"
	"github.com/synod-io/synod/api/synodpb"
	"github.com/synod-io/synod/internal/server"
	"github.com/synod-io/synod/internal/testcluster"
)

// screenshotsEnv, when set, makes TestConsoleInBrowser write its
// screenshots to docs/console-*.png (with a minute of traffic first, so
// that the charts have something to show). A normal run writes nothing.
const screenshotsEnv = "SYNOD_CONSOLE_SCREENSHOTS"

// stepTimeout bounds every browser step.
const stepTimeout = 20 * time.Second

// errorCollector runs in every page before its own scripts: it records
// uncaught errors, unhandled rejections and Content-Security-Policy
// violations, which the test then requires to be none.
const errorCollector = `window.__errors = [];
addEventListener('error', (e) => __errors.push('error: ' + e.message));
addEventListener('unhandledrejection', (e) => __errors.push('unhandled rejection: ' + (e.reason && e.reason.message || e.reason)));
document.addEventListener('securitypolicyviolation', (e) => __errors.push('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));`

// startBrowser starts Debian's chromium, headless, with a fresh profile,
// and returns its first tab. The test fails (never skips) without it.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("SYNOD_CHROMIUM")
	if path == "" {
		var err error
		if path, err = exec.LookPath("chromium"); err != nil {
			t.Fatalf("the console's browser tests need Debian's chromium (apt-get install chromium; .ci/run installs it): %v", err)
		}
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	// Registered after t.TempDir: the browser stops before its profile is
	// removed.
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: errorCollector}); err != nil {
		t.Fatalf("install the error collector: %v", err)
	}
	return ctx
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, what, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitFor waits until the page's expression is truthy.
func waitFor(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout+time.Second)
	defer cancel()
	err := chromedp.Do(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout)))
	if err != nil {
		t.Fatalf("%s: waited %s for %s: %v", what, stepTimeout, expr, err)
	}
}

// noPageErrors fails the test if the page had an uncaught error or a CSP
// violation.
func noPageErrors(t *testing.T, ctx context.Context) {
	t.Helper()
	if errs := eval[[]string](t, ctx, "page errors", `window.__errors || []`); len(errs) > 0 {
		t.Errorf("the page had errors: got %q, want none", errs)
	}
}

// goTo moves the console to another view: without reloading the page
// (which would forget the login) when it shows the console, else by
// loading it.
func goTo(t *testing.T, ctx context.Context, base, hash string) {
	t.Helper()
	if eval[bool](t, ctx, "the page", fmt.Sprintf(`location.href.startsWith(%q)`, base)) {
		eval[bool](t, ctx, "navigate to "+hash, fmt.Sprintf(`(location.hash = %q, true)`, hash))
		return
	}
	do(t, ctx, "open "+hash, chromedp.Navigate(base+hash))
}

// screenshot writes docs/console-<name>.png when screenshots are asked for.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv(screenshotsEnv) == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	// Notes of earlier steps would hide part of the page, and a page
	// scrolled by a click would show its sticky parts out of place.
	eval[bool](t, ctx, "remove notes", `(document.querySelectorAll('.toast').forEach((e) => e.remove()), window.scrollTo(0, 0), true)`)
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join("..", "..", "docs", "console-"+name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", p)
}

// seed writes what the console shows: keys under a few prefixes, a held
// lock with a waiter, an election leader and a group.
type seeded struct {
	lockToken int64
	groupLID  clientv3.LeaseID
}

func seed(t *testing.T, ctx context.Context, cli *clientv3.Client) seeded {
	t.Helper()
	for k, v := range map[string]string{
		"app/config":                       `{"db":{"host":"db.internal","port":5432},"features":["checkout","search"]}`,
		"app/name":                         "shop",
		"app/limits/requests-per-second":   "250",
		"app/limits/burst":                 "500",
		"services/api/10.0.0.1:8080":       `{"zone":"eu-west-1a","healthy":true}`,
		"services/api/10.0.0.2:8080":       `{"zone":"eu-west-1b","healthy":true}`,
		"services/worker/10.0.1.7:9000":    `{"zone":"eu-west-1a","healthy":true}`,
		"secret/db-password":               "hunter2",
		"config/feature-flags/new-billing": "true",
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	if _, err := cli.Put(ctx, "app/name", "shop-eu"); err != nil { // a second version
		t.Fatal(err)
	}
	var s seeded
	holder, err := concurrency.NewSession(cli, concurrency.WithTTL(300))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close() })
	mu := concurrency.NewMutex(holder, "locks/deploy")
	if err := mu.TryLock(ctx); err != nil {
		t.Fatalf("lock: %v", err)
	}
	s.lockToken = mu.Header().Revision
	// A waiter, as etcd's concurrency package enqueues one: its key under
	// the lock's name, on its own lease.
	waiter, err := cli.Grant(ctx, 300)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, fmt.Sprintf("locks/deploy/%x", int64(waiter.ID)), "", clientv3.WithLease(waiter.ID)); err != nil {
		t.Fatal(err)
	}
	if err := concurrency.NewElection(holder, "elections/scheduler").Campaign(ctx, "node-a"); err != nil {
		t.Fatalf("campaign: %v", err)
	}
	lease, err := cli.Grant(ctx, 300)
	if err != nil {
		t.Fatal(err)
	}
	s.groupLID = lease.ID
	groups := synodpb.NewGroupsClient(cli.ActiveConnection())
	for _, m := range []string{"w1", "w2"} {
		if _, err := groups.Join(ctx, &synodpb.JoinRequest{Group: "workers", Member: m, Metadata: []byte(`{"host":"` + m + `.internal"}`), Lease: int64(lease.ID)}); err != nil {
			t.Fatalf("join %s: %v", m, err)
		}
	}
	return s
}

// queuesSeeded is what seedQueues made: the jobs of queue emails (three
// available, one scheduled an hour from now) and the dead job of queue
// reports, with the fencing token of its one claim.
type queuesSeeded struct {
	emails    []uint64
	dead      uint64
	deadToken int64
}

// emailPayload is the payload of the first job of queue emails.
const emailPayload = `{"to":"ada@example.com","template":"welcome","vars":{"name":"Ada"}}`

// seedQueues pushes jobs to two queues, and makes one job dead: claimed
// on a worker's lease, failed permanently, and the worker gone.
func seedQueues(t *testing.T, ctx context.Context, cli *clientv3.Client) queuesSeeded {
	t.Helper()
	qc := queuepb.NewQueueClient(cli.ActiveConnection())
	pushed, err := qc.Push(ctx, &queuepb.PushRequest{Queue: "emails", Jobs: []*queuepb.JobSpec{
		{Payload: []byte(emailPayload), Priority: 5, Group: "customer-7"},
		{Payload: []byte(`{"to":"bob@example.com","template":"receipt","order":42}`)},
		{Payload: []byte("plain text: reset password for carol")},
		{Payload: []byte("weekly digest"), DelayMs: time.Hour.Milliseconds(), IdempotencyKey: "digest-7"},
	}})
	if err != nil {
		t.Fatalf("push to emails: %v", err)
	}
	s := queuesSeeded{emails: pushed.Ids}
	dead, err := qc.Push(ctx, &queuepb.PushRequest{Queue: "reports", Jobs: []*queuepb.JobSpec{{Payload: []byte(`{"report":"weekly"}`), MaxAttempts: 1}}})
	if err != nil {
		t.Fatalf("push to reports: %v", err)
	}
	s.dead = dead.Ids[0]
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := qc.Claim(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&queuepb.ClaimRequest{Queue: "reports", Worker: "report-worker-1", Lease: int64(lease.ID), Capacity: proto.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	for s.deadToken == 0 {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		for _, j := range r.Jobs {
			if j.Id == s.dead {
				s.deadToken = j.Token
			}
		}
	}
	if err := stream.Send(&queuepb.ClaimRequest{Finish: []*queuepb.Finish{{Id: s.dead, Token: s.deadToken, Error: "smtp: 550 mailbox unavailable", Permanent: true}}}); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("fail the job: %v", err)
		}
		for _, f := range r.Finished {
			if f.Id == s.dead {
				if f.Code != 0 {
					t.Fatalf("fail the job: refused: %s", f.Message)
				}
				done = true
			}
		}
	}
	// Without the worker (its lease ended), a redriven job stays pending.
	stop()
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	return s
}

// seedLimits defines a few limits and takes 3 of the 10 tokens of key
// tenant-42 of limit api (refilled at one every 6 minutes: the test sees
// 7 left, 6 after a request of one).
func seedLimits(t *testing.T, ctx context.Context, cli *clientv3.Client) {
	t.Helper()
	lc := synodpb.NewLimitsClient(cli.ActiveConnection())
	for _, l := range []*synodpb.Limit{
		{Name: "api", Algorithm: synodpb.Limit_GCRA, Limit: 10, PeriodMs: time.Hour.Milliseconds(), Burst: 10},
		{Name: "search", Algorithm: synodpb.Limit_SLIDING_WINDOW, Limit: 50, PeriodMs: 1000, Mode: synodpb.Limit_LOCAL},
		{Name: "signups", Algorithm: synodpb.Limit_CALENDAR_WINDOW, Limit: 1000, CalendarUnit: synodpb.Limit_DAY, TimeZone: "Europe/Paris"},
		{Name: "exports", Algorithm: synodpb.Limit_CONCURRENCY, Max: 4},
	} {
		if _, err := lc.SetLimit(ctx, &synodpb.SetLimitRequest{Limit: l}); err != nil {
			t.Fatalf("set limit %s: %v", l.Name, err)
		}
	}
	// A new limit takes effect on every node within a second.
	deadline := time.Now().Add(stepTimeout)
	for {
		r, err := lc.Take(ctx, &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: "api", Key: []byte("tenant-42"), Cost: 3}}})
		if err == nil && r.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("take 3 of api for tenant-42: got %v (%v), want allowed", r, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// traffic writes and reads until ctx ends, at a rate that rises and
// falls, so that the screenshots' charts have a shape.
func traffic(ctx context.Context, cli *clientv3.Client) {
	start := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		rate := 40 + 30*math.Sin(time.Since(start).Seconds()/8)
		_, _ = cli.Put(ctx, "metrics/load/"+strconv.Itoa(i%50), strconv.Itoa(i))
		for range 3 {
			_, _ = cli.Get(ctx, "metrics/load/"+strconv.Itoa(i%50))
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(float64(time.Second) / rate)):
		}
	}
}

// TestConsoleInBrowser drives the web console in a real browser against an
// in-process three-member cluster: the overview lists every member; browsing
// into a prefix shows its keys, values and versions, and puts and deletes
// with a confirmation; a put made by another client shows up in the live
// tail within a second; leases, locks, elections and groups are shown;
// queues show their counts by state, their jobs and a job's payload, error
// and fencing token, and cancel, pause and redrive after a confirmation;
// rate limits show their parameters and a peek that takes nothing; a list
// of 10,000 keys under one prefix renders its first page (the time is
// logged); with auth enabled, a read-only user signs in and can neither see
// a forbidden prefix nor find a delete button, and sees the queues it may
// read without a button that changes them.
func TestConsoleInBrowser(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.BcryptCost = bcrypt.MinCost
		cfg.Version = "0.0.0-test"
	}})
	c.WaitLeader()
	cli := c.Client()
	ctx := testcluster.Context(t, 3*time.Minute)
	s := seed(t, ctx, cli)
	n := c.Node(0)
	base := "http://" + n.ClientAddr + "/ui/"
	tab := startBrowser(t)

	if os.Getenv(screenshotsEnv) != "" {
		// A minute of traffic, so that the charts have a shape.
		tctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { traffic(tctx, cli) })
		t.Cleanup(func() { stop(); wg.Wait() })
		time.Sleep(60 * time.Second) // the charts' history fills in real time
	}

	t.Run("overview lists every member", func(t *testing.T) {
		do(t, tab, "open the console", chromedp.Navigate(base))
		var want []string
		for _, node := range c.Nodes() {
			want = append(want, node.Name)
		}
		expr := fmt.Sprintf(`Array.from(document.querySelectorAll('[data-test=members] tr[data-member]'), (r) => r.dataset.member).sort().join(',') === %q`, strings.Join(want, ","))
		waitFor(t, tab, "members", expr)
		leader := c.Leader()
		waitFor(t, tab, "leader's role", fmt.Sprintf(`document.querySelector('tr[data-member=%q]').textContent.includes('leader')`, leader.Name))
		if got := eval[int](t, tab, "healthy members", `document.querySelectorAll('[data-test=members] .health.ok').length`); got != len(want) {
			t.Errorf("got %d healthy members, want %d", got, len(want))
		}
		waitFor(t, tab, "the charts", `document.querySelectorAll('.chart svg').length === 3`)
		screenshot(t, tab, "cluster")
		noPageErrors(t, tab)
	})

	t.Run("browse, put and delete", func(t *testing.T) {
		goTo(t, tab, base, "#/keys/")
		waitFor(t, tab, "the top level", `document.querySelector('tr[data-dir="app/"]') && document.querySelector('tr[data-dir="secret/"]')`)
		do(t, tab, "open app/", chromedp.Click(chromedp.CSS(`tr[data-dir="app/"] a`)))
		waitFor(t, tab, "keys under app/", `document.querySelector('tr[data-key="app/config"]') && document.querySelector('tr[data-key="app/name"]') && document.querySelector('tr[data-dir="app/limits/"]')`)
		if got := eval[int](t, tab, "rows under app/", `document.querySelectorAll('[data-test=keys] tbody tr').length`); got != 3 {
			t.Errorf("got %d entries under app/, want 3 (config, limits/, name)", got)
		}
		do(t, tab, "select app/config", chromedp.Click(chromedp.CSS(`tr[data-key="app/config"]`)))
		waitFor(t, tab, "the value as JSON", `(document.querySelector('[data-test=value-json]') || {}).textContent === JSON.stringify({db: {host: 'db.internal', port: 5432}, features: ['checkout', 'search']}, null, 2)`)
		// Versions: app/name has two.
		do(t, tab, "select app/name", chromedp.Click(chromedp.CSS(`tr[data-key="app/name"]`)))
		waitFor(t, tab, "app/name", `(document.querySelector('[data-test=value-text]') || {}).textContent === 'shop-eu'`)
		do(t, tab, "older versions", chromedp.Click(chromedp.CSS(`[data-action=older]`)))
		waitFor(t, tab, "two versions", `document.querySelectorAll('[data-test=versions] li').length === 2`)
		do(t, tab, "the first version", chromedp.Click(chromedp.CSS(`[data-test=versions] li:last-child`)))
		waitFor(t, tab, "the first value", `(document.querySelector('[data-test=value-text]') || {}).textContent === 'shop'`)

		// Put through the dialog, confirmed.
		do(t, tab, "put dialog",
			chromedp.Click(chromedp.CSS(`[data-action=put]`)),
			chromedp.WaitVisible(chromedp.CSS(`#put-key`)),
			chromedp.SetValue(chromedp.CSS(`#put-key`), "app/new"),
			chromedp.SetValue(chromedp.CSS(`#put-value`), "fresh"),
			chromedp.Click(chromedp.CSS(`[data-action=put-review]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)),
		)
		if got, err := cli.Get(ctx, "app/new"); err != nil || len(got.Kvs) != 0 {
			t.Fatalf("before the confirmation: got %v (%v), want no key", got.Kvs, err)
		}
		do(t, tab, "confirm the put", chromedp.Click(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)))
		waitKey(t, ctx, cli, "app/new", "fresh")
		// Delete, confirmed.
		waitFor(t, tab, "app/new listed", `document.querySelector('tr[data-key="app/new"]')`)
		do(t, tab, "select app/new", chromedp.Click(chromedp.CSS(`tr[data-key="app/new"]`)))
		waitFor(t, tab, "the delete button", `document.querySelector('[data-test=detail] .keyname') && document.querySelector('[data-test=detail] .keyname').textContent === 'app/new' && document.querySelector('[data-action=delete]')`)
		do(t, tab, "delete",
			chromedp.Click(chromedp.CSS(`[data-action=delete]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)),
			chromedp.Click(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)),
		)
		waitKey(t, ctx, cli, "app/new", "")
		noPageErrors(t, tab)
	})

	t.Run("live tail shows a put within a second", func(t *testing.T) {
		// Through another view, so that the keys view waited for is the new one.
		goTo(t, tab, base, "#/leases")
		waitFor(t, tab, "the leases view", `!document.querySelector('[data-tail-status]')`)
		goTo(t, tab, base, "#/keys/app/")
		waitFor(t, tab, "the tail", `document.querySelector('[data-tail-status=live][data-prefix="app/"]')`)
		// Note when the row appears, in the page, as it happens.
		eval[bool](t, tab, "observe the tail", `(window.__seen = new Promise((resolve) => {
			const seen = () => document.querySelector('[data-tail-key="app/live"]');
			const obs = new MutationObserver(() => { if (seen()) { obs.disconnect(); resolve(performance.timeOrigin + performance.now()); } });
			obs.observe(document.body, { childList: true, subtree: true });
		}), true)`)
		other := c.Client(c.Node(2)) // another client, through another member
		start := time.Now()
		if _, err := other.Put(ctx, "app/live", "hello"); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		seenAt := eval[float64](t, tab, "the tail row", `window.__seen`)
		seen := time.UnixMilli(int64(seenAt))
		t.Logf("the put took %s; its row appeared %s after it was acknowledged (%s after the put began)",
			acked.Sub(start).Round(time.Millisecond), seen.Sub(acked).Round(time.Millisecond), seen.Sub(start).Round(time.Millisecond))
		if d := seen.Sub(start); d > time.Second {
			t.Errorf("the put appeared in the live tail %s after it was made, want within 1s", d)
		}
		do(t, tab, "select app/config", chromedp.Click(chromedp.CSS(`tr[data-key="app/config"]`)))
		waitFor(t, tab, "its value", `document.querySelector('[data-test=value-json]')`)
		screenshot(t, tab, "keys")
		noPageErrors(t, tab)
	})

	t.Run("leases, locks, elections and groups", func(t *testing.T) {
		goTo(t, tab, base, "#/leases")
		waitFor(t, tab, "the group's lease", fmt.Sprintf(`document.querySelector('tr[data-lease="%x"]') && document.querySelector('tr[data-lease="%x"]').textContent.includes('synod/groups/workers/members/w1')`, int64(s.groupLID), int64(s.groupLID)))
		goTo(t, tab, base, "#/coord")
		waitFor(t, tab, "the lock", `document.querySelector('tr[data-lock="locks/deploy/"] [data-test=token]')`)
		if got := eval[string](t, tab, "the fencing token", `document.querySelector('tr[data-lock="locks/deploy/"] [data-test=token]').textContent`); got != strconv.FormatInt(s.lockToken, 10) {
			t.Errorf("got fencing token %q, want %d", got, s.lockToken)
		}
		if got := eval[int](t, tab, "waiters", `document.querySelectorAll('tr[data-lock="locks/deploy/"] .waiters li').length`); got != 1 {
			t.Errorf("got %d waiters, want 1", got)
		}
		waitFor(t, tab, "the election", `(document.querySelector('tr[data-lock="elections/scheduler/"]') || {textContent: ''}).textContent.includes('node-a')`)
		waitFor(t, tab, "the group", `document.querySelector('[data-group=workers] tr[data-group-member=w1]') && document.querySelector('[data-group=workers] tr[data-group-member=w2]')`)
		screenshot(t, tab, "coordination")
		noPageErrors(t, tab)
	})

	t.Run("queues and rate limits", func(t *testing.T) {
		qs := seedQueues(t, ctx, cli)
		seedLimits(t, ctx, cli)
		qc := queuepb.NewQueueClient(cli.ActiveConnection())
		jobState := func(queue string, id uint64) queuepb.State {
			t.Helper()
			r, err := qc.Get(ctx, &queuepb.GetRequest{Queue: queue, Id: id})
			if err != nil {
				t.Fatalf("get job %d of %s: %v", id, queue, err)
			}
			return r.Job.State
		}
		waitJob := func(queue string, id uint64, want queuepb.State) {
			t.Helper()
			deadline := time.Now().Add(stepTimeout)
			for jobState(queue, id) != want {
				if time.Now().After(deadline) {
					t.Fatalf("job %d of %s: got state %s, want %s", id, queue, jobState(queue, id), want)
				}
				time.Sleep(20 * time.Millisecond) // polling interval
			}
		}
		count := func(scope, queue, state string) string {
			return fmt.Sprintf(`(document.querySelector('%s[data-queue=%q] [data-count=%s]') || {}).textContent`, scope, queue, state)
		}

		// The list: every queue with its counts by state.
		goTo(t, tab, base, "#/queues")
		waitFor(t, tab, "emails' counts", count("tr", "emails", "available")+` === '3' && `+count("tr", "emails", "scheduled")+` === '1'`)
		waitFor(t, tab, "reports' dead job", count("tr", "reports", "dead")+` === '1' && `+count("tr", "reports", "available")+` === '0'`)

		// A queue's jobs, and a job's payload as JSON.
		do(t, tab, "open emails", chromedp.Click(chromedp.CSS(`tr[data-queue=emails] a`)))
		waitFor(t, tab, "emails' jobs", fmt.Sprintf(`document.querySelectorAll('[data-test=jobs] tr[data-job]').length === %d`, len(qs.emails)))
		waitFor(t, tab, "the queue's counts", count("[data-test=queue]", "emails", "available")+` === '3 available'`)
		first := fmt.Sprintf(`tr[data-job="%d"]`, qs.emails[0])
		do(t, tab, "select the first job", chromedp.Click(chromedp.CSS(first)))
		waitFor(t, tab, "its payload as JSON", fmt.Sprintf(`(document.querySelector('[data-test=job-payload] [data-test=value-json]') || {}).textContent === JSON.stringify(JSON.parse(%q), null, 2)`, emailPayload))
		do(t, tab, "the payload as hex", chromedp.Click(chromedp.CSS(`[data-test=job-payload] [data-view=hex]`)))
		waitFor(t, tab, "the hex dump", `(document.querySelector('[data-test=job-payload] [data-test=value-hex]') || {textContent: ''}).textContent.startsWith('00000000  7b 22 74 6f')`)

		// Cancel a pending job, after the confirmation.
		second := fmt.Sprintf(`tr[data-job="%d"]`, qs.emails[1])
		do(t, tab, "select the second job", chromedp.Click(chromedp.CSS(second)))
		waitFor(t, tab, "the cancel button", fmt.Sprintf(`(document.querySelector('[data-test=job] .keyname') || {}).textContent === 'Job %d' && document.querySelector('[data-action=cancel-job]')`, qs.emails[1]))
		clearToasts(t, tab)
		do(t, tab, "cancel",
			chromedp.Click(chromedp.CSS(`[data-action=cancel-job]`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)),
		)
		if got := jobState("emails", qs.emails[1]); got != queuepb.State_PENDING {
			t.Fatalf("before the confirmation: got state %s, want PENDING", got)
		}
		do(t, tab, "confirm the cancel", chromedp.Click(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)))
		waitJob("emails", qs.emails[1], queuepb.State_CANCELLED)
		waitFor(t, tab, "the counts after the cancel", count("[data-test=queue]", "emails", "available")+` === '2 available' && `+count("[data-test=queue]", "emails", "cancelled")+` === '1 cancelled'`)
		waitFor(t, tab, "the job's state", `(document.querySelector('[data-test=job-state]') || {}).textContent === 'cancelled'`)

		// Pause the queue (root's, as everything with auth disabled).
		confirmed(t, tab, "pause", "pause")
		waitFor(t, tab, "the resume button", `document.querySelector('[data-action=resume]')`)
		if st, err := qc.Stats(ctx, &queuepb.StatsRequest{Queue: "emails"}); err != nil || !st.GetConfig().GetPaused() {
			t.Errorf("after the pause: got stats %v (%v), want the queue paused", st, err)
		}
		do(t, tab, "select the first job again", chromedp.Click(chromedp.CSS(first)))
		waitFor(t, tab, "its payload", `document.querySelector('[data-test=job-payload] [data-test=value-json]')`)
		screenshot(t, tab, "queues")

		// The dead job: its error and token, and a redrive.
		goTo(t, tab, base, "#/queues/reports?state=DEAD")
		deadRow := fmt.Sprintf(`tr[data-job="%d"]`, qs.dead)
		waitFor(t, tab, "the dead job", `document.querySelector('[data-state=DEAD].active') && document.querySelector('`+deadRow+`')`)
		do(t, tab, "select the dead job", chromedp.Click(chromedp.CSS(deadRow)))
		waitFor(t, tab, "its error", `(document.querySelector('[data-test=job-error]') || {}).textContent === 'smtp: 550 mailbox unavailable'`)
		if got, want := eval[string](t, tab, "its token", `document.querySelector('[data-test=job-token]').textContent`), strconv.FormatInt(qs.deadToken, 10); strings.ReplaceAll(got, ",", "") != want {
			t.Errorf("got fencing token %q, want %s", got, want)
		}
		confirmed(t, tab, "redrive", "redrive-job")
		waitJob("reports", qs.dead, queuepb.State_PENDING)
		waitFor(t, tab, "the counts after the redrive", count("[data-test=queue]", "reports", "dead")+` === '0 dead'`)
		noPageErrors(t, tab)

		// Rate limits: parameters, and a peek that takes nothing.
		goTo(t, tab, base, "#/limits")
		for name, want := range map[string]string{
			"api":     "10 per hour, burst 10",
			"search":  "50 per second, sliding window",
			"signups": "1,000 per calendar day (Europe/Paris)",
			"exports": "4 permits at once",
		} {
			waitFor(t, tab, "limit "+name, fmt.Sprintf(`(document.querySelector('tr[data-limit=%q] [data-test=params]') || {}).textContent === %q`, name, want))
		}
		peek := func(cost int, wantAllowed bool, wantRemaining int) {
			t.Helper()
			eval[bool](t, tab, "clear the answer", `(document.querySelector('[data-test=peek-result]').replaceChildren(), true)`)
			do(t, tab, "peek",
				chromedp.Click(chromedp.CSS(`tr[data-limit=api] [data-action=peek-limit]`)),
				chromedp.SetValue(chromedp.CSS(`#peek-key`), "tenant-42"),
				chromedp.SetValue(chromedp.CSS(`#peek-cost`), strconv.Itoa(cost)),
				chromedp.Click(chromedp.CSS(`[data-action=peek]`)),
			)
			answer := `document.querySelector('[data-test=peek-result] .peek-answer[data-limit=api][data-key="tenant-42"]')`
			waitFor(t, tab, "the peek's answer", answer)
			if got := eval[string](t, tab, "allowed", answer+`.dataset.allowed`); got != strconv.FormatBool(wantAllowed) {
				t.Errorf("peek of cost %d: got allowed %s, want %v", cost, got, wantAllowed)
			}
			if got := eval[string](t, tab, "remaining", answer+`.dataset.remaining`); got != strconv.Itoa(wantRemaining) {
				t.Errorf("peek of cost %d: got remaining %s, want %d", cost, got, wantRemaining)
			}
			if got, want := eval[string](t, tab, "remaining shown", `document.querySelector('[data-test=remaining]').textContent`), fmt.Sprintf("%d of 10", wantRemaining); got != want {
				t.Errorf("peek of cost %d: shows remaining %q, want %q", cost, got, want)
			}
			retry := eval[string](t, tab, "retry after", answer+`.dataset.retryAfter`)
			if wantAllowed != (retry == "0") {
				t.Errorf("peek of cost %d: got retry after %s ms, want 0 if and only if allowed", cost, retry)
			}
		}
		// An allowed request's remaining is what is left after it.
		peek(1, true, 6)
		peek(1, true, 6) // a peek takes nothing
		peek(8, false, 7)
		waitFor(t, tab, "the retry time shown", `/^[56]m [0-9]{2}s$/.test(document.querySelector('[data-test=retry-after]').textContent)`)
		screenshot(t, tab, "limits")
		r, err := synodpb.NewLimitsClient(cli.ActiveConnection()).Take(ctx, &synodpb.TakeRequest{Items: []*synodpb.TakeItem{{Limit: "api", Key: []byte("tenant-42")}}, Peek: true})
		if err != nil || r.Decisions[0].Remaining != 6 {
			t.Errorf("after the console's peeks: got %v (%v), want 6 remaining after one more token (peeks take nothing)", r, err)
		}
		noPageErrors(t, tab)
	})

	t.Run("10,000 keys under one prefix", func(t *testing.T) {
		const total, perTxn = 10000, 100
		for i := 0; i < total; i += perTxn {
			ops := make([]clientv3.Op, 0, perTxn)
			for j := i; j < i+perTxn; j++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("bulk/item-%05d", j), fmt.Sprintf(`{"n":%d}`, j)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
		}
		// A fresh page load, timed by the page itself: from the start of the
		// navigation to the first page of the list.
		do(t, tab, "reload", chromedp.Navigate("about:blank"), chromedp.Navigate(base+"#/keys/bulk/"))
		waitFor(t, tab, "the first page", `performance.getEntriesByName('synod:keys-listed').length > 0`)
		ms := eval[float64](t, tab, "load time", `performance.getEntriesByName('synod:keys-listed')[0].startTime`)
		t.Logf("10,000 keys under bulk/: first page of the list rendered %.0f ms after the navigation began", ms)
		if got := eval[int](t, tab, "rows", `document.querySelectorAll('[data-test=keys] tr[data-key]').length`); got != 100 {
			t.Errorf("got %d rows on the first page, want 100 (paged, not all at once)", got)
		}
		waitFor(t, tab, "the count", `document.querySelector('[data-test=key-count]').textContent === '10,000 keys'`)
		do(t, tab, "load more", chromedp.Click(chromedp.CSS(`[data-action=more]`)))
		waitFor(t, tab, "the second page", `document.querySelectorAll('[data-test=keys] tr[data-key]').length === 200`)
		noPageErrors(t, tab)
	})

	t.Run("read-only user", func(t *testing.T) {
		enableAuth(t, ctx, cli)
		do(t, tab, "reload", chromedp.Navigate("about:blank"), chromedp.Navigate(base+"#/keys/"))
		waitFor(t, tab, "the sign-in form", `document.querySelector('[data-test=login]')`)
		screenshot(t, tab, "login")
		do(t, tab, "sign in with a wrong password",
			chromedp.SendKeys(chromedp.CSS(`#login-user`), "reader"),
			chromedp.SendKeys(chromedp.CSS(`#login-password`), "wrong"),
			chromedp.Click(chromedp.CSS(`#login-submit`)),
		)
		waitFor(t, tab, "the refusal", `document.querySelector('[data-test=login-error]').textContent !== ''`)
		do(t, tab, "sign in as reader",
			chromedp.SetValue(chromedp.CSS(`#login-password`), "readerpw"),
			chromedp.Click(chromedp.CSS(`#login-submit`)),
		)
		waitFor(t, tab, "signed in", `(document.querySelector('[data-test=user]') || {}).textContent === 'reader'`)
		waitFor(t, tab, "the readable prefix", `document.querySelector('tr[data-dir="app/"]')`)
		if got := eval[[]string](t, tab, "top level", `Array.from(document.querySelectorAll('[data-test=keys] tbody tr'), (r) => r.dataset.dir || r.dataset.key)`); len(got) != 1 || got[0] != "app/" {
			t.Errorf("a user who may read app/ only sees %q at the top level, want [app/]", got)
		}
		if got := eval[int](t, tab, "put buttons", `document.querySelectorAll('[data-action=put]').length`); got != 0 {
			t.Errorf("a read-only user sees %d put buttons, want none", got)
		}
		do(t, tab, "open app/", chromedp.Click(chromedp.CSS(`tr[data-dir="app/"] a`)))
		waitFor(t, tab, "app/config listed", `document.querySelector('tr[data-key="app/config"]')`)
		do(t, tab, "select app/config", chromedp.Click(chromedp.CSS(`tr[data-key="app/config"]`)))
		waitFor(t, tab, "its value", `document.querySelector('[data-test=value-json]')`)
		if got := eval[int](t, tab, "write buttons", `document.querySelectorAll('[data-action=delete], [data-action=edit], [data-action=put]').length`); got != 0 {
			t.Errorf("a read-only user sees %d delete, edit or put buttons, want none", got)
		}
		goTo(t, tab, base, "#/keys/secret/")
		waitFor(t, tab, "the refusal", `document.querySelector('[data-test=no-access]')`)
		if got := eval[int](t, tab, "secret keys", `document.querySelectorAll('tr[data-key^="secret/"]').length`); got != 0 {
			t.Errorf("a user who may not read secret/ sees %d of its keys, want none", got)
		}
		body := eval[string](t, tab, "page text", `document.body.innerText`)
		if strings.Contains(body, "hunter2") || strings.Contains(body, "db-password") {
			t.Errorf("the page shows a key or value under secret/ to a user who may not read it:\n%s", body)
		}

		// The queues reader may read: their jobs, and no button to change them.
		goTo(t, tab, base, "#/queues/emails")
		waitFor(t, tab, "the queues", `document.querySelector('tr[data-queue=emails]') && document.querySelector('tr[data-queue=reports]')`)
		waitFor(t, tab, "emails' jobs", `document.querySelector('[data-test=jobs] tr[data-job]')`)
		do(t, tab, "select a job", chromedp.Click(chromedp.CSS(`[data-test=jobs] tr[data-job]`)))
		waitFor(t, tab, "the job", `document.querySelector('[data-test=job-state]')`)
		if got := eval[int](t, tab, "queue buttons", `document.querySelectorAll('[data-action=cancel-job], [data-action=redrive-job], [data-action=purge-job], [data-action=pause], [data-action=resume], [data-action=redrive-all], [data-action=purge-all]').length`); got != 0 {
			t.Errorf("a user who may only read the queues sees %d buttons that change them, want none", got)
		}
		// Rate limits: reader may not list them (nor read any).
		goTo(t, tab, base, "#/limits")
		waitFor(t, tab, "the refusal to list", `(document.querySelector('.msg.info') || {textContent: ''}).textContent.includes('Listing the limits needs read permission')`)
		noPageErrors(t, tab)
	})
}

// clearToasts removes the notes of earlier steps, which could lie over the
// button the next step clicks.
func clearToasts(t *testing.T, ctx context.Context) {
	t.Helper()
	eval[bool](t, ctx, "remove notes", `(document.querySelectorAll('.toast').forEach((e) => e.remove()), true)`)
}

// confirmed clicks the button of data-action action and confirms.
func confirmed(t *testing.T, ctx context.Context, what, action string) {
	t.Helper()
	clearToasts(t, ctx)
	do(t, ctx, what,
		chromedp.Click(chromedp.CSS(`[data-action=`+action+`]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)),
		chromedp.Click(chromedp.CSS(`[data-test=confirm] [data-action=confirm]`)),
	)
}

// waitKey waits until key has value (empty: until it does not exist).
func waitKey(t *testing.T, ctx context.Context, cli *clientv3.Client, key, value string) {
	t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for {
		r, err := cli.Get(ctx, key)
		if err == nil && ((value == "" && len(r.Kvs) == 0) || (len(r.Kvs) == 1 && string(r.Kvs[0].Value) == value)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s: got %v (%v), want value %q", key, r, err, value)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// enableAuth creates root and a user "reader" who may read app/ and the
// queues (synod/queues/) only, and enables auth.
func enableAuth(t *testing.T, ctx context.Context, cli *clientv3.Client) {
	t.Helper()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "reader", "app/", clientv3.GetPrefixRangeEnd("app/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "reader", "synod/queues/", clientv3.GetPrefixRangeEnd("synod/queues/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "reader", "readerpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "reader", "reader"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
}
