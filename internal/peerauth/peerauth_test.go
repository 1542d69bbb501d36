package peerauth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

func newCreds(t *testing.T, secret []byte, clusterID uint64, logger *slog.Logger) *creds {
	t.Helper()
	c, err := Credentials(Config{Secret: secret, ClusterID: clusterID, Timeout: 2 * time.Second, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	return c.(*creds)
}

func secret(t *testing.T) []byte {
	t.Helper()
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type outcome struct {
	conn net.Conn
	info AuthInfo
	err  error
}

// handshake runs a client and a server handshake on the two ends of a
// connection.
func handshake(t *testing.T, client, server *creds) (cl, sv outcome) {
	t.Helper()
	cc, sc := pair(t)
	done := make(chan outcome, 1)
	go func() {
		conn, info, err := server.ServerHandshake(sc)
		o := outcome{conn: conn, err: err}
		if info != nil {
			o.info = info.(AuthInfo)
		}
		done <- o
	}()
	conn, info, err := client.ClientHandshake(context.Background(), "peer", cc)
	cl = outcome{conn: conn, err: err}
	if info != nil {
		cl.info = info.(AuthInfo)
	}
	return cl, <-done
}

func TestHandshakeAcceptsMembers(t *testing.T) {
	s := secret(t)
	for _, clientCID := range []uint64{7, 0} { // 0: a node that does not know its cluster yet
		cl, sv := handshake(t, newCreds(t, s, clientCID, nil), newCreds(t, s, 7, nil))
		if cl.err != nil || sv.err != nil {
			t.Fatalf("client of cluster %x: got client error %v, server error %v; want both accepted", clientCID, cl.err, sv.err)
		}
		if cl.info.ClusterID != 7 || sv.info.ClusterID != clientCID {
			t.Fatalf("cluster IDs: client learned %x, server %x; want 7 and %x", cl.info.ClusterID, sv.info.ClusterID, clientCID)
		}
		if cl.info.AuthType() != ProtocolName {
			t.Fatalf("auth type: got %q, want %q", cl.info.AuthType(), ProtocolName)
		}
		// After the handshake the connection is the plain connection.
		if _, err := cl.conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(sv.conn, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("after the handshake: read %q (err %v), want ping", buf, err)
		}
	}
}

func TestHandshakeRefusesWrongSecret(t *testing.T) {
	var logs logBuffer
	cl, sv := handshake(t, newCreds(t, secret(t), 7, nil), newCreds(t, secret(t), 7, logs.logger()))
	if cl.err == nil || !strings.Contains(cl.err.Error(), "did not prove that it holds this cluster's peer secret") {
		t.Errorf("client: got %v, want the server's proof refused", cl.err)
	}
	if sv.err == nil {
		t.Errorf("server: got the connection accepted, want it refused")
	}
	if !strings.Contains(logs.String(), "refused a peer connection") {
		t.Errorf("server log: got %q, want the refusal logged", logs.String())
	}
}

func TestHandshakeRefusesOtherCluster(t *testing.T) {
	s := secret(t)
	cl, sv := handshake(t, newCreds(t, s, 8, nil), newCreds(t, s, 7, nil))
	if cl.err == nil || !strings.Contains(cl.err.Error(), "member of cluster 7, this node of cluster 8") {
		t.Errorf("client: got %v, want the other cluster refused", cl.err)
	}
	if sv.err == nil {
		t.Errorf("server: got the connection accepted, want it refused")
	}

	// A client that goes on anyway is refused by the server.
	c := newCreds(t, s, 8, nil)
	srv := newCreds(t, s, 7, nil)
	cc, sc := pair(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := srv.ServerHandshake(sc)
		done <- err
	}()
	hello, reply := rawHello(t, cc, 8)
	proof := c.mac(clientLabel, 7, 8, hello[len(magic)+8:], reply[:nonceLen])
	if v := sendProof(t, cc, proof); v != verdictWrongCluster {
		t.Errorf("verdict: got %d, want %d (wrong cluster)", v, verdictWrongCluster)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "member of cluster 8, not 7") {
		t.Errorf("server: got %v, want the other cluster refused", err)
	}
}

// rawHello sends a client hello on conn and returns it with the server's
// reply.
func rawHello(t *testing.T, conn net.Conn, clusterID uint64) (hello [helloLen]byte, reply [replyLen]byte) {
	t.Helper()
	copy(hello[:], magic[:])
	hello[len(magic)+7] = byte(clusterID)
	copy(hello[len(magic)+8:], bytes.Repeat([]byte{0x42}, nonceLen))
	if _, err := conn.Write(hello[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		t.Fatal(err)
	}
	return hello, reply
}

// sendProof sends a client proof and returns the server's verdict.
func sendProof(t *testing.T, conn net.Conn, proof []byte) byte {
	t.Helper()
	if _, err := conn.Write(proof); err != nil {
		t.Fatal(err)
	}
	var v [1]byte
	if _, err := io.ReadFull(conn, v[:]); err != nil {
		t.Fatal(err)
	}
	return v[0]
}

// TestHandshakeRefusesReplayAndReflection records the bytes of a member's
// accepted handshake and plays them to the server again; and sends the
// server's own proof back as a client's.
func TestHandshakeRefusesReplayAndReflection(t *testing.T) {
	s := secret(t)
	srv := newCreds(t, s, 7, nil)
	serve := func(conn net.Conn) chan error {
		done := make(chan error, 1)
		go func() {
			_, _, err := srv.ServerHandshake(conn)
			done <- err
		}()
		return done
	}

	// A member's handshake, recorded.
	cc, sc := pair(t)
	rec := &recorder{Conn: cc}
	done := serve(sc)
	if _, _, err := newCreds(t, s, 7, nil).ClientHandshake(context.Background(), "peer", rec); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sent := rec.written.Bytes()
	if len(sent) != helloLen+macLen {
		t.Fatalf("recorded %d bytes, want %d", len(sent), helloLen+macLen)
	}

	// Replayed: the server's new nonce makes the old proof worthless.
	cc, sc = pair(t)
	done = serve(sc)
	if _, err := cc.Write(sent[:helloLen]); err != nil {
		t.Fatal(err)
	}
	var reply [replyLen]byte
	if _, err := io.ReadFull(cc, reply[:]); err != nil {
		t.Fatal(err)
	}
	if v := sendProof(t, cc, sent[helloLen:]); v != verdictBadProof {
		t.Errorf("replayed proof: got verdict %d, want %d", v, verdictBadProof)
	}
	if err := <-done; err == nil {
		t.Errorf("replayed handshake: got it accepted, want it refused")
	}

	// Reflected: the server's proof, sent back, is not a client's.
	cc, sc = pair(t)
	done = serve(sc)
	_, reply = rawHello(t, cc, 7)
	if v := sendProof(t, cc, reply[nonceLen+8:]); v != verdictBadProof {
		t.Errorf("reflected proof: got verdict %d, want %d", v, verdictBadProof)
	}
	if err := <-done; err == nil {
		t.Errorf("reflected handshake: got it accepted, want it refused")
	}

	// A server that replays a recorded answer is refused by the client,
	// which then proves nothing.
	cc, sc = pair(t)
	recS := &recorder{Conn: sc}
	done = serve(recS)
	if _, _, err := newCreds(t, s, 7, nil).ClientHandshake(context.Background(), "peer", cc); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	answer := recS.written.Bytes()[:replyLen]
	cc, sc = pair(t)
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, helloLen)
		if _, err := io.ReadFull(sc, buf); err != nil {
			got <- nil
			return
		}
		_, _ = sc.Write(answer)
		rest, _ := io.ReadAll(sc) // whatever the client says next
		got <- rest
	}()
	_, _, err := newCreds(t, s, 7, nil).ClientHandshake(context.Background(), "peer", cc)
	if err == nil {
		t.Fatalf("client facing a replayed answer: got it accepted, want it refused")
	}
	cc.Close()
	if rest := <-got; len(rest) != 0 {
		t.Errorf("client facing a replayed answer sent %d more bytes, want none", len(rest))
	}
}

// recorder keeps what is written to a connection.
type recorder struct {
	net.Conn
	written bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.written.Write(p)
	return r.Conn.Write(p)
}

// TestHandshakeTimesOut checks that a client that says nothing, or stops
// halfway, and a server that never answers, are given up on after the
// timeout, and the server closes the connection.
func TestHandshakeTimesOut(t *testing.T) {
	s := secret(t)
	quick, err := Credentials(Config{Secret: s, ClusterID: 7, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"silent client", nil},
		{"client stopping after the magic", magic[:]},
		{"client stopping mid-hello", append(magic[:], 0, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, sc := pair(t)
			if _, err := cc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				_, _, err := quick.ServerHandshake(sc)
				done <- err
			}()
			select {
			case err := <-done:
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("server: got %v, want a timeout", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("server still waiting after 5s, want it to give up after 200ms")
			}
			if d := time.Since(start); d < 150*time.Millisecond {
				t.Errorf("server gave up after %s, want about 200ms", d)
			}
			_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(cc); err != nil {
				t.Errorf("client side after the timeout: got %v, want the connection closed", err)
			}
		})
	}

	// A server that never answers.
	cc, _ := pair(t)
	start := time.Now()
	if _, _, err := quick.ClientHandshake(context.Background(), "peer", cc); err == nil {
		t.Fatalf("client facing a silent server: got success, want a timeout")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("client gave up after %s, want about 200ms", d)
	}
}

func TestHandshakeRefusesStrangers(t *testing.T) {
	var logs logBuffer
	srv := newCreds(t, secret(t), 7, logs.logger())
	for _, tc := range []struct {
		name string
		send []byte
		want error
	}{
		{"http/2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), errNotHandshake},
		{"tls client hello", []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00}, errNotHandshake},
		{"closed at once", nil, io.EOF},
	} {
		cc, sc := pair(t)
		if _, err := cc.Write(tc.send); err != nil {
			t.Fatal(err)
		}
		cc.(*net.TCPConn).CloseWrite()
		_, _, err := srv.ServerHandshake(sc)
		if err != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// Two refusals within the interval make one warning; the prober that
	// said nothing none.
	if n := strings.Count(logs.String(), "refused a peer connection"); n != 1 {
		t.Errorf("warnings: got %d, want 1:\n%s", n, logs.String())
	}
}

func TestSecretText(t *testing.T) {
	s := secret(t)
	text := Format(s)
	if len(text) != 2*SecretLen+1 || text[len(text)-1] != '\n' {
		t.Fatalf("Format: got %q, want %d hex digits and a newline", text, 2*SecretLen)
	}
	got, err := Parse(append([]byte("  "), text...))
	if err != nil || !bytes.Equal(got, s) {
		t.Fatalf("Parse(Format(s)): got %x (err %v), want %x", got, err, s)
	}
	for _, bad := range []string{"", "xyz", strings.Repeat("ab", SecretLen-1), strings.Repeat("a", 2*SecretLen+1)} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q): got no error, want one", bad)
		}
	}
	if _, err := Credentials(Config{Secret: s[:16]}); err == nil {
		t.Errorf("Credentials with a 16-byte secret: got no error, want one")
	}
}

// logBuffer collects a logger's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }
