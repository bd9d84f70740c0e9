package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/auth"
)

// streamTable knows, for each open stream, what it proved (with Auth), the
// context it runs in, and the proxy (node id) it serves. It has its own
// lock, held only to read or write its maps: never while authenticating a
// node id or translating.
type streamTable struct {
	mu      sync.Mutex
	streams map[int64]*stream
}

type stream struct {
	ctx    context.Context
	who    auth.Identity
	proved bool
	proxy  string
}

func newStreamTable() *streamTable { return &streamTable{streams: map[int64]*stream{}} }

// opened records a stream and what it proved, if anything.
func (t *streamTable) opened(ctx context.Context, id int64, who auth.Identity, proved bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[id] = &stream{ctx: ctx, who: who, proved: proved}
}

// get returns a copy of what is known of a stream.
func (t *streamTable) get(id int64) (stream, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok {
		return stream{ctx: context.Background()}, false
	}
	return *st, true
}

// bind says which proxy a stream serves, and what it proved once its node
// id was checked. first is true when the stream named its proxy for the
// first time; a stream serves one proxy for its whole life.
func (t *streamTable) bind(id int64, proxy string, who auth.Identity, proved bool) (first bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok {
		// onOpen records every stream; this is for one that was not.
		st = &stream{ctx: context.Background()}
		t.streams[id] = st
	}
	if st.proxy != "" && st.proxy != proxy {
		return false, status.Errorf(codes.InvalidArgument, "the stream serves node %q and cannot change to %q", st.proxy, proxy)
	}
	first = st.proxy == ""
	st.proxy, st.who, st.proved = proxy, who, proved
	return first, nil
}

// proxyOf names the proxy a stream serves.
func (t *streamTable) proxyOf(id int64) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok || st.proxy == "" {
		return "", false
	}
	return st.proxy, true
}

// closed forgets a stream and names the proxy it served, if any.
func (t *streamTable) closed(id int64) (proxy string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	delete(t.streams, id)
	if !ok || st.proxy == "" {
		return "", false
	}
	return st.proxy, true
}
