package testenv

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Forwarder is a TCP forwarder on 127.0.0.1 that stands for the network
// between a client and its servers: a Service's address in front of the
// controller's replicas (each connection to the first upstream that takes
// it, as kube-proxy sends connections only to ready endpoints), or the
// path to the API server, which a test can cut and restore.
type Forwarder struct {
	// Addr is where clients connect.
	Addr string

	lis       net.Listener
	mu        sync.Mutex
	upstreams []string
	next      int
	cut       bool
	conns     map[net.Conn]struct{}
}

// Forward listens on a free port of 127.0.0.1 and forwards each connection
// to one of upstreams, until the test ends.
func Forward(t testing.TB, upstreams ...string) *Forwarder {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Forwarder{Addr: lis.Addr().String(), lis: lis, upstreams: upstreams, conns: map[net.Conn]struct{}{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		f.Cut()
	})
	return f
}

// Cut closes every open connection and refuses new ones until Restore: the
// peer is gone from the network.
func (f *Forwarder) Cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = true
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// Restore takes connections again.
func (f *Forwarder) Restore() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = false
}

// serve dials the upstreams in turn, from the one after the last used,
// and copies both ways until either side ends.
func (f *Forwarder) serve(in net.Conn) {
	out, err := f.dial()
	if err != nil {
		in.Close()
		return
	}
	f.mu.Lock()
	if f.cut {
		f.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	f.conns[in], f.conns[out] = struct{}{}, struct{}{}
	f.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		// Either side ending ends both.
		dst.Close()
		src.Close()
	}
	wg.Add(2)
	go pipe(out, in)
	go pipe(in, out)
	wg.Wait()
	f.mu.Lock()
	delete(f.conns, in)
	delete(f.conns, out)
	f.mu.Unlock()
}

func (f *Forwarder) dial() (net.Conn, error) {
	f.mu.Lock()
	if f.cut {
		f.mu.Unlock()
		return nil, errors.New("cut")
	}
	ups, start := f.upstreams, f.next
	f.next++
	f.mu.Unlock()
	err := errors.New("no upstream")
	for i := range ups {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", ups[(start+i)%len(ups)], 2*time.Second); err == nil {
			return c, nil
		}
	}
	return nil, err
}
