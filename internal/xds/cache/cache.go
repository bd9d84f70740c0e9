// Package cache is weft's xDS cache for go-control-plane's server, for
// both the state-of-the-world and the delta protocol. It
// keeps each proxy's resources, shares every distinct resource's bytes
// among all streams (each is marshaled once, when it changes), and holds a
// proxy's watch after a NACK until that proxy's configuration changes, so a
// rejected version is never sent again in a loop.
package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// entry is one resource version, marshaled once.
type entry struct {
	msg     types.Resource
	any     *anypb.Any
	version string
	// refs counts the proxies that hold the entry's name; at zero it goes.
	refs int
}

// node is one proxy's state.
type node struct {
	// names and versions of each type the proxy may use.
	names    map[string][]string
	versions map[string]string
	// sent is the version last sent per type; nacked the version the
	// proxy rejected, which is not sent again.
	sent         map[string]string
	nacked       map[string]string
	watches      map[*watch]struct{}
	deltaWatches map[*deltaWatch]struct{}
}

type deltaWatch struct {
	req *discovery.DeltaDiscoveryRequest
	sub cachev3.Subscription
	ch  chan cachev3.DeltaResponse
}

type watch struct {
	req *discovery.DiscoveryRequest
	sub cachev3.Subscription
	ch  chan cachev3.Response
}

// Cache implements go-control-plane's cache.Cache.
type Cache struct {
	mu      sync.Mutex
	entries map[string]map[string]*entry
	nodes   map[string]*node
	// marshals counts resources serialized (for tests and metrics).
	marshals atomic.Int64
}

var _ cachev3.Cache = (*Cache)(nil)

// New returns an empty cache.
func New() *Cache {
	return &Cache{entries: map[string]map[string]*entry{}, nodes: map[string]*node{}}
}

// Len is how many distinct resources the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, byName := range c.entries {
		n += len(byName)
	}
	return n
}

// Marshals is how many resources the cache has serialized so far.
func (c *Cache) Marshals() int64 { return c.marshals.Load() }

func (c *Cache) nodeLocked(id string) *node {
	n := c.nodes[id]
	if n == nil {
		n = &node{names: map[string][]string{}, versions: map[string]string{}, sent: map[string]string{},
			nacked: map[string]string{}, watches: map[*watch]struct{}{}, deltaWatches: map[*deltaWatch]struct{}{}}
		c.nodes[id] = n
	}
	return n
}

// SetProxy replaces the resources of one proxy, by type URL, and answers
// the proxy's waiting watches that the change concerns. A resource with
// the name of one already known and the same content reuses its bytes; a
// resource whose content changed is marshaled once for every proxy.
func (c *Cache) SetProxy(id string, resources map[string][]types.Resource) error {
	c.mu.Lock()
	changed := map[string]bool{} // "type/name" of replaced entries
	names := map[string][]string{}
	for typeURL, list := range resources {
		// An empty list is a version too: the proxy must learn that
		// everything of that type is gone.
		names[typeURL] = []string{}
		byName := c.entries[typeURL]
		if byName == nil {
			byName = map[string]*entry{}
			c.entries[typeURL] = byName
		}
		for _, r := range list {
			name := cachev3.GetResourceName(r)
			names[typeURL] = append(names[typeURL], name)
			// The same object (shared between proxies, or kept across
			// models) is the same resource; otherwise compare content.
			if old := byName[name]; old != nil && (old.msg == r || proto.Equal(old.msg, r)) {
				continue
			}
			e, err := c.newEntry(r)
			if err != nil {
				c.mu.Unlock()
				return fmt.Errorf("proxy %s: %s %s: %w", id, typeURL, name, err)
			}
			if old := byName[name]; old != nil {
				changed[typeURL+"/"+name] = true
				e.refs = old.refs
			}
			byName[name] = e
		}
		slices.Sort(names[typeURL])
	}
	n := c.nodeLocked(id)
	c.holdLocked(names, 1)
	c.holdLocked(n.names, -1)
	n.names = names
	var sends []func()
	// This proxy, and every other that holds an entry that changed, may
	// have a new version.
	for nid, other := range c.nodes {
		if nid != id && !holdsAny(other, changed) {
			continue
		}
		c.refreshVersionsLocked(other)
		sends = append(sends, c.answerLocked(other)...)
	}
	c.mu.Unlock()
	for _, send := range sends {
		send()
	}
	return nil
}

// Versions returns the proxy's current version of each type.
func (c *Cache) Versions(id string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if n == nil {
		return nil
	}
	out := make(map[string]string, len(n.versions))
	for k, v := range n.versions {
		out[k] = v
	}
	return out
}

// RemoveProxy forgets a proxy that went away.
func (c *Cache) RemoveProxy(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[id]; n != nil {
		c.holdLocked(n.names, -1)
		delete(c.nodes, id)
	}
}

// holdLocked adds delta to the reference count of every named entry, and
// drops the entries no proxy holds any more.
func (c *Cache) holdLocked(names map[string][]string, delta int) {
	for typeURL, list := range names {
		byName := c.entries[typeURL]
		for _, name := range list {
			e := byName[name]
			if e == nil {
				continue
			}
			if e.refs += delta; e.refs <= 0 {
				delete(byName, name)
			}
		}
	}
}

func holdsAny(n *node, changed map[string]bool) bool {
	if len(changed) == 0 {
		return false
	}
	for typeURL, names := range n.names {
		for _, name := range names {
			if changed[typeURL+"/"+name] {
				return true
			}
		}
	}
	return false
}

func (c *Cache) newEntry(r types.Resource) (*entry, error) {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, err
	}
	c.marshals.Add(1)
	h := fnv.New64a()
	h.Write(raw)
	return &entry{
		msg:     r,
		any:     &anypb.Any{TypeUrl: "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName()), Value: raw},
		version: strconv.FormatUint(h.Sum64(), 36),
	}, nil
}

// refreshVersionsLocked recomputes a node's version of each type from the
// names it holds and their entries' versions.
func (c *Cache) refreshVersionsLocked(n *node) {
	versions := map[string]string{}
	for typeURL, names := range n.names {
		h := fnv.New64a()
		for _, name := range names {
			h.Write([]byte(name))
			h.Write([]byte{0})
			h.Write([]byte(c.entries[typeURL][name].version))
			h.Write([]byte{0})
		}
		versions[typeURL] = strconv.FormatUint(h.Sum64(), 36)
	}
	n.versions = versions
}

// answerLocked answers the node's waiting watches that can be answered now,
// returning the sends to do once the lock is released.
func (c *Cache) answerLocked(n *node) []func() {
	var sends []func()
	for w := range n.watches {
		if resp := c.respondLocked(n, w); resp != nil {
			delete(n.watches, w)
			ch := w.ch
			sends = append(sends, func() { ch <- resp })
		}
	}
	for w := range n.deltaWatches {
		if resp := c.deltaRespondLocked(n, w); resp != nil {
			delete(n.deltaWatches, w)
			ch := w.ch
			sends = append(sends, func() { ch <- resp })
		}
	}
	return sends
}

// deltaRespondLocked builds the delta response a watch is owed now: the
// subscribed resources whose version differs from what the stream holds,
// and the names it holds that are gone. It returns nil when there is
// nothing to send. A NACKed version is already what the stream holds, so
// it is not sent again.
func (c *Cache) deltaRespondLocked(n *node, w *deltaWatch) cachev3.DeltaResponse {
	typeURL := w.req.GetTypeUrl()
	names, ok := n.names[typeURL]
	if !ok {
		return nil
	}
	have := w.sub.ReturnedResources()
	subscribed := w.sub.SubscribedResources()
	wildcard := w.sub.IsWildcard()
	next := make(map[string]string, len(have))
	for k, v := range have {
		next[k] = v
	}
	out := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: n.versions[typeURL]}
	present := make(map[string]bool, len(names))
	for _, name := range names {
		present[name] = true
		if _, sub := subscribed[name]; !wildcard && !sub {
			continue
		}
		e := c.entries[typeURL][name]
		if have[name] == e.version {
			continue
		}
		out.Resources = append(out.Resources, &discovery.Resource{Name: name, Version: e.version, Resource: e.any})
		next[name] = e.version
	}
	for name := range have {
		if !present[name] {
			out.RemovedResources = append(out.RemovedResources, name)
			delete(next, name)
		}
	}
	if len(out.Resources) == 0 && len(out.RemovedResources) == 0 {
		return nil
	}
	slices.Sort(out.RemovedResources)
	return &deltaResponse{req: w.req, out: out, next: next}
}

// respondLocked builds the response a watch is owed now, or nil when it
// must wait: no configuration for the type yet, the proxy already has this
// version and every name it asks for, or it rejected this very version.
func (c *Cache) respondLocked(n *node, w *watch) cachev3.Response {
	typeURL := w.req.GetTypeUrl()
	version, ok := n.versions[typeURL]
	if !ok || n.nacked[typeURL] == version {
		return nil
	}
	requested := w.req.GetResourceNames()
	if w.req.GetVersionInfo() == version && !asksForNew(w, requested, n.names[typeURL]) {
		return nil
	}
	wanted := map[string]bool{}
	for _, r := range requested {
		wanted[r] = true
	}
	out := &discovery.DiscoveryResponse{VersionInfo: version, TypeUrl: typeURL}
	returned := map[string]string{}
	for _, name := range n.names[typeURL] {
		if len(wanted) > 0 && !wanted[name] && !wanted["*"] {
			continue
		}
		out.Resources = append(out.Resources, c.entries[typeURL][name].any)
		returned[name] = version
	}
	n.sent[typeURL] = version
	return &response{req: w.req, out: out, returned: returned}
}

// asksForNew says whether the stream asks for a name it has not been sent.
func asksForNew(w *watch, requested, have []string) bool {
	var got map[string]string
	if w.sub != nil {
		got = w.sub.ReturnedResources()
	}
	for _, r := range requested {
		if _, sent := got[r]; !sent && slices.Contains(have, r) {
			return true
		}
	}
	return false
}

// CreateWatch answers a SotW request now, or when the proxy's configuration
// changes. A request that carries error_detail is a NACK: the version last
// sent is marked rejected and not sent again.
func (c *Cache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	id := req.GetNode().GetId()
	if id == "" {
		return nil, errors.New("the request names no node")
	}
	c.mu.Lock()
	n := c.nodeLocked(id)
	if req.GetErrorDetail() != nil {
		n.nacked[req.GetTypeUrl()] = n.sent[req.GetTypeUrl()]
	}
	w := &watch{req: req, sub: sub, ch: ch}
	if resp := c.respondLocked(n, w); resp != nil {
		c.mu.Unlock()
		ch <- resp
		return func() {}, nil
	}
	n.watches[w] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(n.watches, w)
		c.mu.Unlock()
	}, nil
}

// CreateDeltaWatch answers a delta request now with what changed since
// what the stream holds, or waits until something does.
func (c *Cache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	id := req.GetNode().GetId()
	if id == "" {
		return nil, errors.New("the request names no node")
	}
	c.mu.Lock()
	n := c.nodeLocked(id)
	w := &deltaWatch{req: req, sub: sub, ch: ch}
	if resp := c.deltaRespondLocked(n, w); resp != nil {
		c.mu.Unlock()
		ch <- resp
		return func() {}, nil
	}
	n.deltaWatches[w] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(n.deltaWatches, w)
		c.mu.Unlock()
	}, nil
}

// Fetch (REST polling) is not served.
func (c *Cache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("fetching xDS over REST is not served")
}

// response is a SotW response over shared, already marshaled resources.
type response struct {
	req      *discovery.DiscoveryRequest
	out      *discovery.DiscoveryResponse
	returned map[string]string
}

func (r *response) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) { return r.out, nil }
func (r *response) GetRequest() *discovery.DiscoveryRequest                     { return r.req }
func (r *response) GetVersion() (string, error)                                 { return r.out.VersionInfo, nil }
func (r *response) GetResponseVersion() string                                  { return r.out.VersionInfo }
func (r *response) GetReturnedResources() map[string]string                     { return r.returned }
func (r *response) GetContext() context.Context                                 { return context.Background() }

// deltaResponse is a delta response over shared, already marshaled
// resources.
type deltaResponse struct {
	req  *discovery.DeltaDiscoveryRequest
	out  *discovery.DeltaDiscoveryResponse
	next map[string]string
}

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discovery.DeltaDiscoveryResponse, error) {
	return r.out, nil
}
func (r *deltaResponse) GetDeltaRequest() *discovery.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                 { return r.out.SystemVersionInfo, nil }
func (r *deltaResponse) GetResponseVersion() string                        { return r.out.SystemVersionInfo }
func (r *deltaResponse) GetNextVersionMap() map[string]string              { return r.next }
func (r *deltaResponse) GetReturnedResources() map[string]string           { return r.next }
func (r *deltaResponse) GetContext() context.Context                       { return context.Background() }
