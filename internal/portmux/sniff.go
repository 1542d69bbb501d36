package portmux

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
)

// dest is where a connection goes.
type dest int

const (
	toHTTP dest = iota
	toGRPC
)

// clientPreface starts every HTTP/2 connection (RFC 9113, 3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP/2 frames (RFC 9113, 4.1 and 6).
const (
	frameHeaderLen = 9

	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameSettings     = 0x4
	framePing         = 0x6
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	// defaultMaxFrameSize is the largest frame payload a client may send
	// before the server's SETTINGS raise it; the Mux's SETTINGS leave it.
	defaultMaxFrameSize = 16384
	// maxSniffBytes bounds what the Mux holds of an HTTP/2 connection
	// before its first request's headers; past it, the connection goes to
	// the gRPC server.
	maxSniffBytes = 256 << 10
)

// sniff terminates TLS (if configured) and reads the start of raw until it
// knows where it goes:
//
//   - ALPN "http/1.1", or first bytes that are not the HTTP/2 client
//     preface: HTTP/1, to the HTTP server;
//   - HTTP/2 whose first request has content-type application/grpc*: to the
//     gRPC server;
//   - other HTTP/2 (curl over TLS, browsers): to the HTTP server.
//
// gRPC clients wait for the server's SETTINGS before their first request,
// so for HTTP/2 the Mux sends an empty SETTINGS frame at once, answers PINGs
// and drops the client's acknowledgement of its SETTINGS, so that the
// server that gets the connection sees a client that acknowledges only its
// own (the HTTP/2 server closes a connection that acknowledges SETTINGS it
// did not send; gRPC's ignores acknowledgements). The connection returned
// replays what was read and kept.
func (m *Mux) sniff(raw net.Conn) (net.Conn, dest, error) {
	_ = raw.SetDeadline(time.Now().Add(m.firstBytes))
	var c net.Conn = raw
	var state *tls.ConnectionState
	if m.tls != nil {
		tc := tls.Server(raw, m.tls)
		if err := tc.HandshakeContext(m.ctx); err != nil {
			return nil, 0, fmt.Errorf("tls handshake: %w", err)
		}
		st := tc.ConnectionState()
		c, state = tc, &st
		if st.NegotiatedProtocol == "http/1.1" {
			_ = raw.SetDeadline(time.Time{})
			return m.wrap(raw, c, state, nil, toHTTP, false), toHTTP, nil
		}
	}
	pre := make([]byte, 0, len(clientPreface))
	for len(pre) < len(clientPreface) {
		n, err := c.Read(pre[len(pre):cap(pre)])
		pre = pre[:len(pre)+n]
		if string(pre) != clientPreface[:len(pre)] {
			_ = raw.SetDeadline(time.Time{})
			return m.wrap(raw, c, state, pre, toHTTP, false), toHTTP, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read first bytes: %w", err)
		}
	}
	// An idle gRPC client may send its first request long after it
	// connected: no read deadline from here on.
	_ = raw.SetDeadline(time.Time{})
	if err := m.writeFrame(raw, c, frameSettings, 0, nil); err != nil {
		return nil, 0, err
	}
	kept, to, ackSeen, err := m.sniffHTTP2(raw, c, pre)
	if err != nil {
		return nil, 0, err
	}
	return m.wrap(raw, c, state, kept, to, to == toHTTP && !ackSeen), to, nil
}

// sniffHTTP2 reads frames until the first request's headers are complete,
// and returns the bytes to replay and where the connection goes, and
// whether the client acknowledged the Mux's SETTINGS already.
func (m *Mux) sniffHTTP2(raw, c net.Conn, kept []byte) (_ []byte, _ dest, ackSeen bool, _ error) {
	var hdr [frameHeaderLen]byte
	var block []byte // the header block of the first request
	inHeaders := false
	for len(kept) <= maxSniffBytes {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, 0, false, fmt.Errorf("read http/2 frame: %w", err)
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := hdr[3], hdr[4]
		if length > defaultMaxFrameSize {
			// A frame too large for this server: the gRPC server refuses it.
			return append(kept, hdr[:]...), toGRPC, ackSeen, nil
		}
		payload := make([]byte, length)
		if _, err := io.ReadFull(c, payload); err != nil {
			return nil, 0, false, fmt.Errorf("read http/2 frame: %w", err)
		}
		switch {
		case typ == frameSettings && flags&flagAck != 0 && !ackSeen:
			ackSeen = true // of the Mux's SETTINGS: the server never sent it
			continue
		case typ == framePing && flags&flagAck == 0 && !inHeaders:
			// gRPC clients' keepalive pings: answered here, unseen by the server.
			if err := m.writeFrame(raw, c, framePing, flagAck, payload); err != nil {
				return nil, 0, false, err
			}
			continue
		}
		kept = append(kept, hdr[:]...)
		kept = append(kept, payload...)
		switch {
		case inHeaders && typ != frameContinuation:
			return kept, toGRPC, ackSeen, nil // a protocol error for the server to report
		case typ == frameSettings, typ == frameWindowUpdate, typ == framePriority, typ == framePing:
			continue
		case typ == frameHeaders:
			frag, ok := headerFragment(flags, payload)
			if !ok {
				return kept, toGRPC, ackSeen, nil
			}
			block = append(block[:0], frag...)
			inHeaders = true
		case typ == frameContinuation && inHeaders:
			block = append(block, payload...)
		default:
			// DATA before any headers, GOAWAY, RST_STREAM...: nothing an
			// HTTP client starts with.
			return kept, toGRPC, ackSeen, nil
		}
		if flags&flagEndHeaders != 0 {
			if isGRPCRequest(block) {
				return kept, toGRPC, ackSeen, nil
			}
			return kept, toHTTP, ackSeen, nil
		}
	}
	return kept, toGRPC, ackSeen, nil
}

// headerFragment returns the header block fragment of a HEADERS frame.
func headerFragment(flags byte, p []byte) ([]byte, bool) {
	if flags&flagPadded != 0 {
		if len(p) < 1 {
			return nil, false
		}
		pad := int(p[0])
		p = p[1:]
		if pad > len(p) {
			return nil, false
		}
		p = p[:len(p)-pad]
	}
	if flags&flagPriority != 0 {
		if len(p) < 5 {
			return nil, false
		}
		p = p[5:]
	}
	return p, true
}

// isGRPCRequest reports whether a request's header block says gRPC
// (content-type application/grpc, +proto or any other suffix). A block that
// does not decode goes to gRPC too, whose server reports the error.
func isGRPCRequest(block []byte) bool {
	var contentType string
	d := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == "content-type" {
			contentType = f.Value
		}
	})
	d.SetMaxStringLength(16 << 10)
	if _, err := d.Write(block); err != nil {
		return true
	}
	if err := d.Close(); err != nil {
		return true
	}
	return strings.HasPrefix(contentType, "application/grpc")
}

// writeFrame writes one HTTP/2 frame on stream 0.
func (m *Mux) writeFrame(raw, c net.Conn, typ, flags byte, payload []byte) error {
	b := make([]byte, frameHeaderLen, frameHeaderLen+len(payload))
	b[0], b[1], b[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	b[3], b[4] = typ, flags
	binary.BigEndian.PutUint32(b[5:], 0)
	b = append(b, payload...)
	_ = raw.SetWriteDeadline(time.Now().Add(m.firstBytes))
	_, err := c.Write(b)
	_ = raw.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("write http/2 frame: %w", err)
	}
	return nil
}

// wrap returns the connection the server of to gets: c (TCP, or TLS over
// raw) replaying prefix, and dropping the client's next SETTINGS
// acknowledgement if stripAck. Over TLS it reports the TLS state
// (ConnectionState), except for HTTP/2 to the HTTP server, which must take
// it for HTTP/2 with prior knowledge (the Mux passes the state on through
// the request's context).
func (m *Mux) wrap(raw, c net.Conn, state *tls.ConnectionState, prefix []byte, to dest, stripAck bool) net.Conn {
	base := &conn{Conn: c, raw: raw, m: m}
	base.r = &replay{prefix: prefix, src: c}
	if stripAck {
		base.r = &ackFilter{src: base.r, skip: len(clientPreface)}
	}
	switch {
	case state == nil:
		return base
	case to == toHTTP && len(prefix) >= len(clientPreface) && string(prefix[:len(clientPreface)]) == clientPreface:
		return &h2TLSConn{conn: base, state: *state}
	default:
		return &tlsConn{conn: base, state: *state}
	}
}

// conn is a connection handed to a server.
type conn struct {
	net.Conn           // TCP, or TLS over raw
	raw       net.Conn // the accepted connection
	m         *Mux
	r         io.Reader
	closeOnce sync.Once
}

func (c *conn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *conn) Close() error {
	c.closeOnce.Do(func() { c.m.untrack(c.raw) })
	return c.Conn.Close()
}

// tlsConn is a TLS connection to a server that takes the TLS state from
// the connection (gRPC through Credentials, HTTP/1).
type tlsConn struct {
	*conn
	state tls.ConnectionState
}

// ConnectionState returns the state of the Mux's TLS handshake.
func (c *tlsConn) ConnectionState() tls.ConnectionState { return c.state }

// h2TLSConn is an HTTP/2 connection over TLS to the HTTP server.
type h2TLSConn struct {
	*conn
	state tls.ConnectionState
}

// replay reads prefix, then src.
type replay struct {
	prefix []byte
	src    io.Reader
}

func (r *replay) Read(p []byte) (int, error) {
	if len(r.prefix) > 0 {
		n := copy(p, r.prefix)
		r.prefix = r.prefix[n:]
		return n, nil
	}
	return r.src.Read(p)
}

// ackFilter passes an HTTP/2 byte stream through, after skip bytes (the
// preface), except for the first SETTINGS acknowledgement, which it drops.
type ackFilter struct {
	src     io.Reader
	skip    int // bytes to pass through before the next frame header
	hdr     [frameHeaderLen]byte
	nhdr    int
	pending []byte // frame header bytes to hand out
	done    bool   // the acknowledgement was dropped: pass everything
}

func (f *ackFilter) Read(p []byte) (int, error) {
	for {
		switch {
		case len(f.pending) > 0:
			n := copy(p, f.pending)
			f.pending = f.pending[n:]
			return n, nil
		case f.done:
			return f.src.Read(p)
		case f.skip > 0:
			if len(p) > f.skip {
				p = p[:f.skip]
			}
			n, err := f.src.Read(p)
			f.skip -= n
			return n, err
		}
		n, err := f.src.Read(f.hdr[f.nhdr:])
		f.nhdr += n
		if f.nhdr == frameHeaderLen {
			f.nhdr = 0
			length := int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
			if f.hdr[3] == frameSettings && f.hdr[4]&flagAck != 0 && length == 0 {
				f.done = true
			} else {
				f.pending = append(f.pending[:0], f.hdr[:]...)
				f.skip = length
			}
		}
		if err != nil {
			// Hand out what was read; the next read returns the error again.
			f.pending = append(f.pending, f.hdr[:f.nhdr]...)
			f.nhdr = 0
			f.done = true
			if len(f.pending) == 0 {
				return 0, err
			}
		}
	}
}
