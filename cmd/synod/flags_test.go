package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// execute runs the synod command in-process and returns its exit code and
// outputs.
func execute(ctx context.Context, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestBadFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	start := func(args ...string) []string {
		return append([]string{"start", "--data-dir", dir}, args...)
	}
	notHex := writeFile(t, "not-hex", "this is no secret\n")
	short := writeFile(t, "short", strings.Repeat("ab", 16)+"\n")
	tests := []struct {
		args []string
		want string
	}{
		{start("--bogus"), "unknown flag: --bogus"},
		{start("extra"), `synod start takes no arguments, got "extra"`},
		{start("--name", ""), "--name must be non-empty"},
		{start("--name", "a=b"), "--name must be non-empty without '='"},
		{start("--heartbeat-ticks", "10"), "--heartbeat-ticks (10) must be less than --election-ticks (10)"},
		{start("--heartbeat-ticks", "5", "--election-ticks", "3"), "--heartbeat-ticks (5) must be less than --election-ticks (3)"},
		{start("--election-ticks", "-1"), "--election-ticks must be positive, got -1"},
		{start("--heartbeat-ticks", "0"), "--heartbeat-ticks must be positive"},
		{start("--max-request-bytes", "-1"), "--max-request-bytes must be positive, got -1"},
		{start("--max-txn-ops", "0"), "--max-txn-ops must be positive"},
		{start("--max-txn-ops", "many"), `invalid argument "many" for "--max-txn-ops"`},
		{start("--tick-interval", "0s"), "--tick-interval must be positive"},
		{start("--tick-interval", "-5ms"), "--tick-interval must be positive"},
		{start("--tick-interval", "fast"), `invalid argument "fast" for "--tick-interval"`},
		{start("--request-timeout", "-1s"), "--request-timeout must not be negative"},
		{start("--log-truncate-threshold", "0"), "--log-truncate-threshold must be positive"},
		{start("--log-truncate-threshold", "-3"), `invalid argument "-3" for "--log-truncate-threshold"`},
		{start("--log-keep-entries", "20000"), "--log-keep-entries (20000) must not exceed --log-truncate-threshold (10000)"},
		{start("--client-addr", "localhost"), `--client-addr must be host:port, got "localhost"`},
		{start("--peer-addr", "127.0.0.1:99999"), `--peer-addr: bad port "99999"`},
		{start("--advertise-client-url", "ftp://x:1"), "--advertise-client-url: url \"ftp://x:1\": scheme must be http or https"},
		{start("--initial-cluster", "n1"), `--initial-cluster: initial cluster entry "n1": want name=host:port`},
		{start("--initial-cluster", "n1=127.0.0.1"), "--initial-cluster: initial cluster entry"},
		{start("--initial-cluster", "a=127.0.0.1:2380,a=127.0.0.1:2381", "--name", "a"), `--initial-cluster: initial cluster names "a" twice`},
		{start("--initial-cluster", "n1=127.0.0.1:2380"), `--initial-cluster has no member named "default" (--name)`},
		{start("--name", "n1", "--initial-cluster", "n1=127.0.0.1:12380"), "--initial-cluster gives n1 the peer address 127.0.0.1:12380, but --peer-addr is 127.0.0.1:2380"},
		{start("--cluster-token", ""), "--cluster-token must not be empty"},
		{start("--advertise-peer-url", "127.0.0.1"), `--advertise-peer-url: url "http://127.0.0.1": want host:port`},
		{start("--peer-source-ip", "localhost"), `--peer-source-ip must be an IP address, got "localhost"`},
		{start("--name", "n1", "--advertise-peer-url", "127.0.0.1:9000", "--initial-cluster", "n1=127.0.0.1:2380"),
			"--initial-cluster gives n1 the peer URL http://127.0.0.1:2380, but --advertise-peer-url is http://127.0.0.1:9000"},
		{start("--name", "n1", "--initial-cluster", "n1=127.0.0.1:2380,n2=127.0.0.1:22380"),
			"--initial-cluster has 2 members: without peer TLS they authenticate each other with a shared peer secret; make one with 'synod peer-secret new FILE'"},
		{start("--initial-cluster-state", "existing", "--initial-cluster", "n1=127.0.0.1:22380"),
			"--initial-cluster-state existing needs the cluster's --peer-secret-file (write it with 'synod peer-secret get FILE'"},
		{start("--peer-secret-file", filepath.Join(t.TempDir(), "none")), "--peer-secret-file: open "},
		{start("--peer-secret-file", notHex), "--peer-secret-file " + notHex + ": a peer secret is written in hex digits"},
		{start("--peer-secret-file", short), "--peer-secret-file " + short + ": a peer secret has at least 32 bytes (64 hex digits), got 16"},
		{[]string{"snapshot", "restore", "b.db", "--peer-secret-file", notHex}, "--peer-secret-file " + notHex + ": a peer secret is written in hex digits"},
		{[]string{"peer-secret", "new", "a", "b"}, "synod peer-secret new takes [FILE], got 2 arguments"},
		{start("--enable-pprof"), "--enable-pprof needs --metrics-addr"},
		{start("--initial-cluster", "default=127.0.0.1:0"), `--initial-cluster: initial cluster entry "default=127.0.0.1:0": url "http://127.0.0.1:0": port 0 is not in 1-65535`},
		{start("--advertise-peer-url", "127.0.0.1:99999"), `--advertise-peer-url: url "http://127.0.0.1:99999": port 99999 is not in 1-65535`},
		{start("--advertise-client-url", "http://:2379"), `--advertise-client-url: url "http://:2379": no host`},
		{start("--log-level", "loud"), `--log-level must be debug, info, warn or error, got "loud"`},
		{start("--log-format", "xml"), `--log-format must be text or json, got "xml"`},
		{start("--range-max-bytes", "0"), "--range-max-bytes must not be 0"},
		{start("--test-data-range-splits", "b,a"), `--test-data-range-splits: data range splits must be sorted and distinct: "a" after "b"`},
		{start("--test-data-range-splits", "a,,b"), "--test-data-range-splits: key 2 is empty"},
		{start("--test-data-range-splits", `\x01synod/q`), `--test-data-range-splits: data range split "\x01synod/q": splits must sort above every reserved key`},
		{start("--test-data-range-splits", `a\q`), `--test-data-range-splits: bad escape at "\\q"`},
		{start("--test-data-range-splits", `a\x4`), `--test-data-range-splits: \x needs two hex digits, got "\\x4"`},
		{[]string{"demo", "--test-data-range-splits", "a,a"}, `--test-data-range-splits: data range splits must be sorted and distinct: "a" after "a"`},
		{[]string{"demo", "--range-max-bytes", "0"}, "--range-max-bytes must not be 0"},

		{[]string{"demo", "--nodes", "0"}, "--nodes must be at least 1"},
		{[]string{"demo", "--nodes", "4"}, "--nodes is 4 but --client-ports has 3 ports and --peer-ports 3"},
		{[]string{"demo", "--client-ports", "1,2"}, "--nodes is 3 but --client-ports has 2 ports"},
		{[]string{"demo", "--client-ports", "1,2,x"}, `invalid argument "1,2,x" for "--client-ports"`},
		{[]string{"demo", "--client-ports", "5000,5001,5002", "--peer-ports", "6000,5001,6002"}, "port 5001 is both the client port of n2 and the peer port of n2"},
		{[]string{"demo", "--client-ports", "70000,1,2"}, "client port 70000 of n1 is not a port number"},
		{[]string{"demo", "--tick-interval", "0s"}, "--tick-interval must be positive"},

		{[]string{"frob"}, `unknown command "frob" for "synod"`},
		{[]string{"get"}, "synod get takes KEY [RANGE_END], got 0 arguments"},
		{[]string{"get", "a", "b", "c"}, "synod get takes KEY [RANGE_END], got 3 arguments"},
		{[]string{"get", "a", "--sort-by", "size"}, `--sort-by must be KEY, VERSION, CREATE, MODIFY or VALUE, got "size"`},
		{[]string{"get", "a", "--order", "up"}, `--order must be ASCEND or DESCEND, got "up"`},
		{[]string{"get", "a", "--consistency", "x"}, `--consistency must be l (linearizable) or s (serializable), got "x"`},
		{[]string{"get", "a", "z", "--prefix"}, "RANGE_END cannot be given with --prefix"},
		{[]string{"get", "a", "--prefix", "--from-key"}, "--prefix and --from-key cannot be used together"},
		{[]string{"get", "a", "--rev", "-2"}, "--rev must not be negative, got -2"},
		{[]string{"put", "k"}, "synod put takes KEY VALUE, got 1 argument"},
		{[]string{"put", "k", "v", "--ignore-value"}, "synod put takes only KEY with --ignore-value, got 2 arguments"},
		{[]string{"put", "k", "v", "--lease", "xyz"}, `bad lease ID "xyz"`},
		{[]string{"del"}, "synod del takes KEY [RANGE_END], got 0 arguments"},
		{[]string{"del", "a", "b", "--from-key"}, "RANGE_END cannot be given with --from-key"},
		{[]string{"compact"}, "synod compact takes REV, got 0 arguments"},
		{[]string{"compact", "-5"}, "unknown shorthand flag: '5' in -5"},
		{[]string{"compact", "x"}, `REV must be a positive revision, got "x"`},
		{[]string{"compact", "0"}, `REV must be a positive revision, got "0"`},
		{[]string{"member", "add", "n4"}, "--peer-urls is required"},
		{[]string{"member", "add", "n4", "--peer-urls", "http://127.0.0.1:99999"}, `--peer-urls: url "http://127.0.0.1:99999": port 99999 is not in 1-65535`},
		{[]string{"member", "add", "n4", "--peer-urls", ":0"}, `--peer-urls: url "http://:0": no host`},
		{[]string{"member", "add", "n4", "--peer-urls", "http://127.0.0.1:2390,http://127.0.0.1:2391/x"}, `--peer-urls: url "http://127.0.0.1:2391/x": must not have a path`},
		{[]string{"member", "update", "1f", "--peer-urls", "http://127.0.0.1:0"}, `--peer-urls: url "http://127.0.0.1:0": port 0 is not in 1-65535`},
		{[]string{"members", "x"}, `synod members takes no arguments, got "x"`},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"txn", "x"}, `synod txn takes no arguments, got "x"`},
		{[]string{"get", "a", "-w", "yaml"}, `--write-out must be simple or json, got "yaml"`},
		{[]string{"get", "a", "--endpoints", "nohost"}, `endpoint "nohost": want host:port or http://host:port`},
		{[]string{"get", "a", "--endpoints", "unix://x:1"}, `endpoint "unix://x:1": scheme must be http or https`},
		{[]string{"get", "a", "--endpoints", ""}, "--endpoints must name at least one endpoint"},
		{[]string{"get", "a", "--dial-timeout", "0s"}, "--dial-timeout must be positive"},
		{[]string{"get", "a", "--command-timeout", "-1s"}, "--command-timeout must be positive"},
	}
	for _, tt := range tests {
		// Bounded: a start that wrongly accepts its flags runs until cancelled.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		code, stdout, stderr := execute(ctx, "", tt.args...)
		cancel()
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("synod %s made the data dir (%v), want none", strings.Join(tt.args, " "), err)
		}
		if code != exitUsage {
			t.Errorf("synod %s: exit code %d, want %d (stderr %q)", strings.Join(tt.args, " "), code, exitUsage, stderr)
		}
		if !strings.Contains(stderr, "Error: "+tt.want) {
			t.Errorf("synod %s: stderr\n%s\nwant it to contain %q", strings.Join(tt.args, " "), stderr, "Error: "+tt.want)
		}
		if !strings.Contains(stderr, "--help") && !strings.Contains(stderr, "Usage:") {
			t.Errorf("synod %s: stderr %q has no usage hint", strings.Join(tt.args, " "), stderr)
		}
		if stdout != "" {
			t.Errorf("synod %s: stdout %q, want nothing", strings.Join(tt.args, " "), stdout)
		}
	}
}

func TestTxnSyntaxErrorExitCode(t *testing.T) {
	code, _, stderr := execute(t.Context(), "value(\"k\") = \"v\"\n\nput k\n", "txn")
	if code != exitUsage {
		t.Errorf("exit code %d, want %d", code, exitUsage)
	}
	if want := "Error: txn line 3: put takes KEY VALUE, got 1 argument\nRun 'synod txn --help' for usage.\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := execute(t.Context(), "", "version")
	if want := "synod version: 0.1.0-dev\nAPI version: 3.6\n"; code != 0 || stdout != want {
		t.Errorf("version: exit %d, stdout %q, want 0 and %q", code, stdout, want)
	}
	code, stdout, _ = execute(t.Context(), "", "version", "-w", "json")
	if want := `{"synod_version":"0.1.0-dev","api_version":"3.6"}` + "\n"; code != 0 || stdout != want {
		t.Errorf("version -w json: exit %d, stdout %q, want 0 and %q", code, stdout, want)
	}
}

func TestHelp(t *testing.T) {
	code, stdout, _ := execute(t.Context(), "", "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, cmd := range []string{"start", "demo", "put", "get", "del", "txn", "compact", "members", "status", "version"} {
		if !strings.Contains(stdout, "\n  "+cmd+" ") {
			t.Errorf("--help does not list %s:\n%s", cmd, stdout)
		}
	}
}

func TestUnreachableEndpoint(t *testing.T) {
	// Nothing listens on port 1: the dial times out with a clear message.
	code, _, stderr := execute(t.Context(), "", "get", "k", "--endpoints", "127.0.0.1:1", "--dial-timeout", "300ms")
	if code != exitError {
		t.Errorf("exit code %d, want %d", code, exitError)
	}
	if want := "Error: cannot connect to 127.0.0.1:1 within 300ms"; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q, want it to contain %q", stderr, want)
	}
}

// writeFile writes a file in a temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartConfig(t *testing.T) {
	var o startOptions
	fs := pflag.NewFlagSet("start", pflag.ContinueOnError)
	o.addFlags(fs)
	secret := strings.Repeat("0123456789abcdef", 4)
	if err := fs.Parse([]string{"--name", "n2", "--peer-addr", "127.0.0.1:22380",
		"--initial-cluster", "n1=127.0.0.1:2380,n2=127.0.0.1:22380", "--request-timeout", "3s",
		"--advertise-client-url", "localhost:2379", "--peer-secret-file", writeFile(t, "secret", secret+"\n")}); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(cfg.PeerSecret); got != secret {
		t.Errorf("peer secret: got %s, want %s", got, secret)
	}
	if cfg.Name != "n2" || cfg.DataDir != "n2.synod" || cfg.PeerAddr != "127.0.0.1:22380" ||
		cfg.ClientAddr != "127.0.0.1:2379" || cfg.AdvertiseClientURL != "http://localhost:2379" ||
		cfg.InitialCluster != "n1=127.0.0.1:2380,n2=127.0.0.1:22380" ||
		cfg.TickInterval != 100*time.Millisecond || cfg.ElectionTicks != 10 || cfg.HeartbeatTicks != 1 ||
		cfg.MaxRequestBytes != 1572864 || cfg.MaxTxnOps != 128 || cfg.RequestTimeout != 3*time.Second ||
		cfg.ClusterToken != "synod-cluster" || cfg.LogTruncateThreshold != 10000 || cfg.LogKeepEntries != 5000 {
		t.Errorf("config = %+v", cfg)
	}
}

func TestStartConfigAdvertisedPeer(t *testing.T) {
	var o startOptions
	fs := pflag.NewFlagSet("start", pflag.ContinueOnError)
	o.addFlags(fs)
	// The member listens on 127.0.0.2:7000 but is reached through a proxy
	// at 127.0.0.1:9002: --initial-cluster names the proxy.
	if err := fs.Parse([]string{"--name", "n2", "--peer-addr", "127.0.0.2:7000",
		"--advertise-peer-url", "127.0.0.1:9002", "--peer-source-ip", "127.0.0.2",
		"--initial-cluster", "n1=127.0.0.1:9001,n2=127.0.0.1:9002",
		"--peer-secret-file", writeFile(t, "secret", strings.Repeat("ab", 32))}); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PeerAddr != "127.0.0.2:7000" || cfg.AdvertisePeerURL != "http://127.0.0.1:9002" || cfg.PeerSourceIP != "127.0.0.2" {
		t.Errorf("peer addresses: got listen %s, advertise %s, source %s; want 127.0.0.2:7000, http://127.0.0.1:9002, 127.0.0.2",
			cfg.PeerAddr, cfg.AdvertisePeerURL, cfg.PeerSourceIP)
	}
}

func TestDemoPorts(t *testing.T) {
	tests := []struct {
		nodes              int
		client, peer       []int
		clientSet, peerSet bool
		wantClient         []int
		wantPeer           []int
	}{
		{3, demoClientPorts, demoPeerPorts, false, false, []int{2379, 22379, 32379}, []int{2380, 22380, 32380}},
		{1, demoClientPorts, demoPeerPorts, false, false, []int{2379}, []int{2380}},
		{2, []int{1, 2}, []int{3, 4}, true, true, []int{1, 2}, []int{3, 4}},
		{3, []int{0, 0, 0}, []int{0, 0, 0}, true, true, []int{0, 0, 0}, []int{0, 0, 0}},
	}
	for _, tt := range tests {
		o := demoOptions{nodes: tt.nodes, clientPorts: tt.client, peerPorts: tt.peer}
		c, p, err := o.ports(tt.clientSet, tt.peerSet)
		if err != nil {
			t.Errorf("ports(%+v): %v", o, err)
			continue
		}
		if fmt.Sprint(c) != fmt.Sprint(tt.wantClient) || fmt.Sprint(p) != fmt.Sprint(tt.wantPeer) {
			t.Errorf("ports(%+v) = %v, %v, want %v, %v", o, c, p, tt.wantClient, tt.wantPeer)
		}
	}
}
