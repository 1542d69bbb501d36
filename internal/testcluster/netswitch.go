package testcluster

import (
	"context"
	"errors"
	"net"
	"sync"
)

var errCut = errors.New("testcluster: node is cut off the network")

// netSwitch tracks every connection of one node so that a test can cut them
// all at once, and refuse new ones until it is restored.
type netSwitch struct {
	mu    sync.Mutex
	down  bool
	conns map[*trackedConn]struct{}
}

func newNetSwitch() *netSwitch {
	return &netSwitch{conns: map[*trackedConn]struct{}{}}
}

func (s *netSwitch) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		c.Close()
		return nil, errCut
	}
	tc := &trackedConn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

func (s *netSwitch) forget(c *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// cut closes every connection and refuses new ones.
func (s *netSwitch) cut() {
	s.mu.Lock()
	s.down = true
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// restore accepts connections again.
func (s *netSwitch) restore() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = false
}

func (s *netSwitch) dial(ctx context.Context, addr string) (net.Conn, error) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		return nil, errCut
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

type trackedConn struct {
	net.Conn
	s *netSwitch
}

func (c *trackedConn) Close() error {
	c.s.forget(c)
	return c.Conn.Close()
}

// switchedListener hands out tracked connections and drops new ones while
// the switch is down.
type switchedListener struct {
	net.Listener
	s *netSwitch
}

func (l *switchedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, err := l.s.track(c)
		if err != nil {
			continue
		}
		return tc, nil
	}
}
