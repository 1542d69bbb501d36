package peerauth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// DefaultTimeout bounds a handshake, so that a connection that says nothing
// cannot hold a server goroutine for long.
const DefaultTimeout = 5 * time.Second

// ProtocolName names the handshake in gRPC's security information.
const ProtocolName = "synod-peer-secret"

const (
	nonceLen  = 32
	macLen    = sha256.Size
	helloLen  = len(magic) + 8 + nonceLen
	replyLen  = nonceLen + 8 + macLen
	verdictOK = 0
	// verdictBadProof and verdictWrongCluster are a server's refusals.
	verdictBadProof     = 1
	verdictWrongCluster = 2

	serverLabel = "synod peer auth v1: server\x00"
	clientLabel = "synod peer auth v1: client\x00"
)

// magic opens a client's hello: the protocol and its version.
var magic = [8]byte{'s', 'y', 'n', 'o', 'd', 'p', 'a', '1'}

// failureLogInterval is the least time between two warnings about refused
// connections; the ones in between are counted in the next warning.
const failureLogInterval = 10 * time.Second

// Config configures the credentials of one node.
type Config struct {
	// Secret is the cluster's peer secret (at least SecretLen bytes).
	Secret []byte
	// ClusterID is this node's cluster. 0 is allowed only for dialing, by a
	// node that does not know its cluster yet.
	ClusterID uint64
	// Timeout bounds each handshake (default DefaultTimeout).
	Timeout time.Duration
	// Logger receives the refused connections, at most one warning per
	// 10 s (default: discarded).
	Logger *slog.Logger
}

// AuthInfo describes a connection authenticated by the handshake.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// ClusterID is the cluster the other end declared (0 from a node that
	// does not know its cluster yet).
	ClusterID uint64
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return ProtocolName }

// Credentials returns gRPC transport credentials that run the handshake on
// every connection, as client or server. The secret is copied.
func Credentials(cfg Config) (credentials.TransportCredentials, error) {
	if err := CheckSecret(cfg.Secret); err != nil {
		return nil, err
	}
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &creds{cfg: cfg, failures: &failureLog{logger: cfg.Logger}}, nil
}

type creds struct {
	cfg      Config
	failures *failureLog
}

// ClientHandshake proves this node's membership to the server at the other
// end of conn, once the server has proved its own.
func (c *creds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (_ net.Conn, _ credentials.AuthInfo, err error) {
	deadline := time.Now().Add(c.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, nil, err
	}
	defer func() {
		if err == nil {
			err = conn.SetDeadline(time.Time{})
		}
		if err != nil {
			conn.Close() // the server learns at once (gRPC would close it too)
		}
	}()
	var hello [helloLen]byte
	copy(hello[:], magic[:])
	binary.BigEndian.PutUint64(hello[len(magic):], c.cfg.ClusterID)
	cn := hello[len(magic)+8:]
	if _, err := rand.Read(cn); err != nil {
		return nil, nil, err
	}
	if _, err := conn.Write(hello[:]); err != nil {
		return nil, nil, fmt.Errorf("peer handshake with %s: %w", authority, err)
	}
	var reply [replyLen]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return nil, nil, fmt.Errorf("peer handshake with %s: no answer (%w): is it a Synod member without peer TLS?", authority, err)
	}
	sn := reply[:nonceLen]
	serverCID := binary.BigEndian.Uint64(reply[nonceLen:])
	if !hmac.Equal(reply[nonceLen+8:], c.mac(serverLabel, serverCID, c.cfg.ClusterID, cn, sn)) {
		return nil, nil, fmt.Errorf("peer handshake with %s: it did not prove that it holds this cluster's peer secret (the members' peer secrets differ)", authority)
	}
	if c.cfg.ClusterID != 0 && serverCID != c.cfg.ClusterID {
		return nil, nil, fmt.Errorf("peer handshake with %s: it is a member of cluster %x, this node of cluster %x", authority, serverCID, c.cfg.ClusterID)
	}
	if _, err := conn.Write(c.mac(clientLabel, serverCID, c.cfg.ClusterID, cn, sn)); err != nil {
		return nil, nil, fmt.Errorf("peer handshake with %s: %w", authority, err)
	}
	var verdict [1]byte
	if _, err := io.ReadFull(conn, verdict[:]); err != nil {
		return nil, nil, fmt.Errorf("peer handshake with %s: no verdict: %w", authority, err)
	}
	switch verdict[0] {
	case verdictOK:
		return conn, AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, ClusterID: serverCID}, nil
	case verdictWrongCluster:
		return nil, nil, fmt.Errorf("peer handshake with %s: refused: not of its cluster", authority)
	default:
		return nil, nil, fmt.Errorf("peer handshake with %s: refused this node's proof", authority)
	}
}

// errNotHandshake is a server's refusal of a connection that does not
// start with the handshake.
var errNotHandshake = errors.New("the connection does not start with the Synod peer handshake (a plaintext gRPC client, TLS, or a stranger: do the members' peer TLS settings differ?)")

// ServerHandshake accepts a connection from a member: the client must prove
// that it holds the secret. A refused connection is closed.
func (c *creds) ServerHandshake(conn net.Conn) (_ net.Conn, _ credentials.AuthInfo, err error) {
	// The deadline stays after success: gRPC clears it once HTTP/2 is up.
	if err := conn.SetDeadline(time.Now().Add(c.cfg.Timeout)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			conn.Close()
			if err != io.EOF {
				c.failures.note(conn.RemoteAddr(), err)
			}
		}
	}()
	var hello [helloLen]byte
	// The magic first: a stranger is told off without waiting for more.
	if n, err := io.ReadFull(conn, hello[:len(magic)]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, nil, io.EOF // closed before a word: a prober; gRPC keeps quiet about it
		}
		if !bytes.Equal(hello[:n], magic[:n]) {
			return nil, nil, errNotHandshake
		}
		return nil, nil, fmt.Errorf("incomplete handshake: %w", err)
	}
	if [8]byte(hello[:len(magic)]) != magic {
		return nil, nil, errNotHandshake
	}
	if _, err := io.ReadFull(conn, hello[len(magic):]); err != nil {
		return nil, nil, fmt.Errorf("incomplete handshake: %w", err)
	}
	clientCID := binary.BigEndian.Uint64(hello[len(magic):])
	cn := hello[len(magic)+8:]
	var reply [replyLen]byte
	sn := reply[:nonceLen]
	if _, err := rand.Read(sn); err != nil {
		return nil, nil, err
	}
	binary.BigEndian.PutUint64(reply[nonceLen:], c.cfg.ClusterID)
	copy(reply[nonceLen+8:], c.mac(serverLabel, c.cfg.ClusterID, clientCID, cn, sn))
	if _, err := conn.Write(reply[:]); err != nil {
		return nil, nil, err
	}
	var proof [macLen]byte
	if _, err := io.ReadFull(conn, proof[:]); err != nil {
		return nil, nil, fmt.Errorf("the client gave no proof (%w): it holds another secret, or is no Synod member", err)
	}
	verdict := byte(verdictOK)
	switch {
	case !hmac.Equal(proof[:], c.mac(clientLabel, c.cfg.ClusterID, clientCID, cn, sn)):
		verdict = verdictBadProof
	case clientCID != 0 && clientCID != c.cfg.ClusterID:
		verdict = verdictWrongCluster
	}
	if _, err := conn.Write([]byte{verdict}); err != nil {
		return nil, nil, err
	}
	switch verdict {
	case verdictBadProof:
		return nil, nil, errors.New("the client's proof is wrong: it does not hold this cluster's peer secret")
	case verdictWrongCluster:
		return nil, nil, fmt.Errorf("the client is a member of cluster %x, not %x", clientCID, c.cfg.ClusterID)
	}
	return conn, AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, ClusterID: clientCID}, nil
}

// mac is the proof of one end: HMAC-SHA256 under the secret of the
// direction label, the server's and the client's cluster IDs and nonces.
func (c *creds) mac(label string, serverCID, clientCID uint64, cn, sn []byte) []byte {
	h := hmac.New(sha256.New, c.cfg.Secret)
	var ids [16]byte
	binary.BigEndian.PutUint64(ids[:8], serverCID)
	binary.BigEndian.PutUint64(ids[8:], clientCID)
	h.Write([]byte(label))
	h.Write(ids[:])
	h.Write(cn)
	h.Write(sn)
	return h.Sum(nil)
}

// Info implements credentials.TransportCredentials.
func (c *creds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: ProtocolName}
}

// Clone implements credentials.TransportCredentials.
func (c *creds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName implements credentials.TransportCredentials; the
// handshake names no server.
func (c *creds) OverrideServerName(string) error { return nil }

// failureLog reports refused connections without flooding the log: the
// first at once, then at most one per failureLogInterval with the count of
// the ones in between.
type failureLog struct {
	logger *slog.Logger
	mu     struct {
		sync.Mutex
		last       time.Time
		suppressed int
	}
}

func (l *failureLog) note(remote net.Addr, err error) {
	l.mu.Lock()
	now := time.Now()
	if !l.mu.last.IsZero() && now.Sub(l.mu.last) < failureLogInterval {
		l.mu.suppressed++
		l.mu.Unlock()
		return
	}
	more := l.mu.suppressed
	l.mu.last, l.mu.suppressed = now, 0
	l.mu.Unlock()
	addr := "unknown"
	if remote != nil {
		addr = remote.String()
	}
	l.logger.Warn("refused a peer connection: it did not prove that it holds the cluster's peer secret",
		"remote", addr, "err", err, "refused-since-last-warning", more)
}
