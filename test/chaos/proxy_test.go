package chaos

import (
	"net"
	"sync"
	"time"
)

// proxy sits between the peers of a process cluster: node j advertises the
// proxy's listener j, the proxy forwards to where j really listens, and it
// knows which node a connection comes from by its source address (each node
// dials from its own loopback address). Per link (from, to) it can cut
// (close the connections and refuse new ones) or delay traffic.
type proxy struct {
	listeners []net.Listener
	targets   []string
	sources   map[string]int // source IP to node index

	mu     sync.Mutex
	cut    map[[2]int]bool
	delay  time.Duration
	conns  map[[2]int]map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newProxy(targets []string, sourceIPs []string) (*proxy, error) {
	p := &proxy{
		targets: targets,
		sources: map[string]int{},
		cut:     map[[2]int]bool{},
		conns:   map[[2]int]map[net.Conn]struct{}{},
	}
	for i, ip := range sourceIPs {
		p.sources[ip] = i
	}
	for range targets {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.close()
			return nil, err
		}
		p.listeners = append(p.listeners, l)
	}
	for j, l := range p.listeners {
		p.wg.Go(func() { p.accept(j, l) })
	}
	return p, nil
}

// addr is the address node j is advertised at.
func (p *proxy) addr(j int) string { return p.listeners[j].Addr().String() }

func (p *proxy) accept(to int, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		from, ok := p.sources[host]
		if !ok {
			c.Close() // not a node of this cluster
			continue
		}
		link := [2]int{from, to}
		p.mu.Lock()
		if p.closed || p.cut[link] {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.track(link, c)
		p.mu.Unlock()
		p.wg.Go(func() { p.forward(link, c) })
	}
}

func (p *proxy) track(link [2]int, c net.Conn) {
	if p.conns[link] == nil {
		p.conns[link] = map[net.Conn]struct{}{}
	}
	p.conns[link][c] = struct{}{}
}

func (p *proxy) forget(link [2]int, c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns[link], c)
}

// forward pumps one connection of a link to its target and back.
func (p *proxy) forward(link [2]int, in net.Conn) {
	defer in.Close()
	defer p.forget(link, in)
	out, err := net.DialTimeout("tcp", p.targets[link[1]], 2*time.Second)
	if err != nil {
		return // the target is down: the peer sees a closed connection
	}
	p.mu.Lock()
	if p.closed || p.cut[link] {
		p.mu.Unlock()
		out.Close()
		return
	}
	p.track(link, out)
	p.mu.Unlock()
	defer p.forget(link, out)
	defer out.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		p.pump(out, in)
		out.Close()
	})
	p.pump(in, out)
	in.Close()
	wg.Wait()
}

// pump copies src to dst, holding each chunk for the current delay.
func (p *proxy) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			d := p.delay
			p.mu.Unlock()
			if d > 0 {
				time.Sleep(d) // models latency; not synchronization
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, or the connection was cut
		}
	}
}

// cutLink closes the link's connections and refuses new ones until heal.
func (p *proxy) cutLink(from, to int) {
	p.mu.Lock()
	link := [2]int{from, to}
	p.cut[link] = true
	conns := p.conns[link]
	p.conns[link] = nil
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

func (p *proxy) setDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

func (p *proxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.cut)
	p.delay = 0
}

// close stops the proxy and waits for its goroutines.
func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	var all []net.Conn
	for _, cs := range p.conns {
		for c := range cs {
			all = append(all, c)
		}
	}
	p.mu.Unlock()
	for _, l := range p.listeners {
		l.Close()
	}
	for _, c := range all {
		c.Close()
	}
	p.wg.Wait()
}
