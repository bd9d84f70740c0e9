// Package cache is weft's xDS cache for go-control-plane's server, for
// both the state-of-the-world and the delta protocol.
//
// Resources live in named sets (what every proxy of a flavour shares, and
// what one Envoy sidecar has of its own); a proxy is served the union of
// the sets it is assigned. Every distinct resource is marshaled once, when
// it changes, and its bytes are shared by every set and stream that holds
// it. A change to a set costs work in proportion to what changed: each
// type's version is an order-independent sum over its resources, kept up
// to date entry by entry, and a waiting delta stream is answered from the
// changed names alone. A proxy's watch is held after a NACK until its
// configuration changes, so a rejected version is never sent again in a
// loop.
package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
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

// entry is one resource version, marshaled once and shared by every set
// that holds equal content under its name.
type entry struct {
	name    string
	msg     types.Resource
	any     *anypb.Any
	version string
	// refs counts the sets that hold the entry; at zero it goes.
	refs int
}

// slot is an entry in a set, with its share of the set's version.
type slot struct {
	e   *entry
	sum uint64
}

// typeSet is a set's resources of one type.
type typeSet struct {
	slots map[string]slot
	// sum is the order-independent sum of every slot's share: the set's
	// version of the type, kept up to date one entry at a time.
	sum uint64
	// sorted lists the names in order; nil when names came or went.
	sorted []string
}

func (ts *typeSet) names() []string {
	if ts.sorted == nil {
		ts.sorted = slices.Sorted(maps.Keys(ts.slots))
	}
	return ts.sorted
}

// set is a named group of resources that proxies are assigned.
type set struct {
	id    string
	types map[string]*typeSet
	nodes map[*node]struct{}
}

// node is one proxy's state.
type node struct {
	id   string
	sets []*set
	// versions is the proxy's version of each type, derived from its
	// sets'. needed is the version the proxy must acknowledge to hold its
	// current configuration: the version last sent, or the current one
	// when a change did not concern what the proxy asked for.
	versions map[string]string
	needed   map[string]string
	answered map[string]bool
	// asked holds the types the proxy ever asked for: it holds its
	// configuration once it acknowledged those. A gRPC server that asks
	// only for its Listener owes no clusters.
	asked map[string]bool
	// sent is the version last sent per type; nacked the version the
	// proxy rejected, which is not sent again.
	sent    map[string]string
	nacked  map[string]string
	watches map[*watch]struct{}
	// lastSent is, per type, the last state-of-the-world response's
	// resources (shared with the response, not copied), for Held.
	lastSent map[string]*response
	// changes counts the changes of each type; journal keeps the names
	// each change concerned, for as long as a delta stream of the node
	// has yet to be told of it.
	changes map[string]uint64
	journal map[string][]change
	deltas  map[*DeltaStream]struct{}
}

// change is one change of a node's resources of one type.
type change struct {
	seq   uint64
	names []string
}

type watch struct {
	req *discovery.DiscoveryRequest
	sub cachev3.Subscription
	ch  chan cachev3.Response
}

// Cache implements go-control-plane's cache.Cache.
type Cache struct {
	mu sync.Mutex
	// entries indexes every entry by type and name (sets of different
	// proxies may hold different content under one name).
	entries map[string]map[string][]*entry
	sets    map[string]*set
	nodes   map[string]*node
	// marshals counts resources serialized (for tests and metrics);
	// deltaStreams numbers delta streams.
	marshals     atomic.Int64
	deltaStreams atomic.Int64
	// firstLists remembers the last first response's list per type: the
	// streams that connect together share it.
	firstLists lists
}

var _ cachev3.Cache = (*Cache)(nil)

// New returns an empty cache.
func New() *Cache {
	return &Cache{entries: map[string]map[string][]*entry{}, sets: map[string]*set{}, nodes: map[string]*node{}, firstLists: lists{}}
}

// Len is how many distinct resources the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, byName := range c.entries {
		for _, es := range byName {
			n += len(es)
		}
	}
	return n
}

// Marshals is how many resources the cache has serialized so far.
func (c *Cache) Marshals() int64 { return c.marshals.Load() }

func (c *Cache) nodeLocked(id string) *node {
	n := c.nodes[id]
	if n == nil {
		n = &node{id: id, versions: map[string]string{}, needed: map[string]string{}, answered: map[string]bool{}, asked: map[string]bool{},
			sent: map[string]string{}, nacked: map[string]string{}, watches: map[*watch]struct{}{}, lastSent: map[string]*response{},
			changes: map[string]uint64{}, journal: map[string][]change{}, deltas: map[*DeltaStream]struct{}{}}
		c.nodes[id] = n
	}
	return n
}

// ProxySet names the set that holds a proxy's own resources; RemoveProxy
// drops it with the proxy.
func ProxySet(id string) string { return "proxy/" + id }

// SetProxy gives one proxy resources of its own, by type URL, and makes
// them all it is served.
func (c *Cache) SetProxy(id string, resources map[string][]types.Resource) error {
	if err := c.SetResources(ProxySet(id), resources); err != nil {
		return fmt.Errorf("proxy %s: %w", id, err)
	}
	return c.Assign(id, ProxySet(id))
}

// SetResources replaces the resources of a set, by type URL, and answers
// the waiting watches of the proxies assigned to it that the change
// concerns. A type given with an empty list is a version too: its proxies
// learn that everything of that type is gone. A resource with the name of
// one already known and the same content reuses its bytes; one whose
// content changed is marshaled once.
func (c *Cache) SetResources(id string, resources map[string][]types.Resource) error {
	c.mu.Lock()
	s := c.sets[id]
	if s == nil {
		s = &set{id: id, types: map[string]*typeSet{}, nodes: map[*node]struct{}{}}
		c.sets[id] = s
	}
	changed := map[string][]string{}
	for typeURL, list := range resources {
		names, err := c.updateTypeLocked(s, typeURL, list)
		if err != nil {
			c.mu.Unlock()
			return fmt.Errorf("set %s: %w", id, err)
		}
		if names != nil {
			changed[typeURL] = names
		}
	}
	var sends []func()
	memo := &changeMemo{lists: lists{}, src: s, templates: map[string]*discovery.DeltaDiscoveryResponse{}}
	for n := range s.nodes {
		sends = append(sends, c.changedLocked(n, changed, memo)...)
	}
	c.mu.Unlock()
	for _, send := range sends {
		send()
	}
	return nil
}

// lists remembers, per type, the list of resources of the first delta
// response that one change produced, so that every other response with
// the same resources shares the slice (and the server encodes it once).
type lists map[string][]*discovery.Resource

// share returns the remembered list when it holds the same resources as
// list, and otherwise remembers list if nothing is remembered yet.
func (l lists) share(typeURL string, list []*discovery.Resource) []*discovery.Resource {
	if l == nil || len(list) == 0 {
		return list
	}
	prev, ok := l[typeURL]
	if !ok {
		l[typeURL] = list
		return list
	}
	if slices.EqualFunc(prev, list, func(a, b *discovery.Resource) bool {
		return a.Name == b.Name && a.Version == b.Version && a.Resource == b.Resource
	}) {
		return prev
	}
	return list
}

// latest is share for a memory that outlives one change: a list that
// differs from the remembered one replaces it.
func (l lists) latest(typeURL string, list []*discovery.Resource) []*discovery.Resource {
	shared := l.share(typeURL, list)
	if len(list) > 0 && &shared[0] == &list[0] {
		l[typeURL] = list
	}
	return shared
}

// updateTypeLocked replaces a set's resources of one type and returns the
// names that changed, came or went (nil when nothing did; empty but not
// nil when the type is new to the set).
func (c *Cache) updateTypeLocked(s *set, typeURL string, list []types.Resource) ([]string, error) {
	ts := s.types[typeURL]
	var changed []string
	if ts == nil {
		ts = &typeSet{slots: make(map[string]slot, len(list))}
		s.types[typeURL] = ts
		changed = []string{}
	}
	seen := make(map[string]bool, len(list))
	for _, r := range list {
		name := cachev3.GetResourceName(r)
		if seen[name] {
			return nil, fmt.Errorf("%s %s is given twice", typeURL, name)
		}
		seen[name] = true
		old, had := ts.slots[name]
		// The same object (shared between sets, or kept across models)
		// is the same resource; otherwise compare content.
		if had && (old.e.msg == r || proto.Equal(old.e.msg, r)) {
			continue
		}
		e, err := c.acquireLocked(typeURL, name, r)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", typeURL, name, err)
		}
		if had {
			ts.sum -= old.sum
			c.releaseLocked(typeURL, old.e)
		} else {
			ts.sorted = nil
		}
		sl := slot{e: e, sum: share(name, e.version)}
		ts.slots[name] = sl
		ts.sum += sl.sum
		changed = append(changed, name)
	}
	if len(seen) < len(ts.slots) {
		for name, old := range ts.slots {
			if seen[name] {
				continue
			}
			ts.sum -= old.sum
			c.releaseLocked(typeURL, old.e)
			delete(ts.slots, name)
			ts.sorted = nil
			changed = append(changed, name)
		}
	}
	return changed, nil
}

// share is one resource's part of its set's version.
func share(name, version string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(version))
	return h.Sum64()
}

// acquireLocked returns the entry for a resource, reusing one with the
// same object or content, or marshaling it.
func (c *Cache) acquireLocked(typeURL, name string, r types.Resource) (*entry, error) {
	byName := c.entries[typeURL]
	if byName == nil {
		byName = map[string][]*entry{}
		c.entries[typeURL] = byName
	}
	for _, e := range byName[name] {
		if e.msg == r || proto.Equal(e.msg, r) {
			e.refs++
			return e, nil
		}
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, err
	}
	c.marshals.Add(1)
	h := fnv.New64a()
	h.Write(raw)
	e := &entry{
		name:    name,
		msg:     r,
		any:     &anypb.Any{TypeUrl: "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName()), Value: raw},
		version: strconv.FormatUint(h.Sum64(), 36),
		refs:    1,
	}
	byName[name] = append(byName[name], e)
	return e, nil
}

func (c *Cache) releaseLocked(typeURL string, e *entry) {
	if e.refs--; e.refs > 0 {
		return
	}
	byName := c.entries[typeURL]
	byName[e.name] = slices.DeleteFunc(byName[e.name], func(x *entry) bool { return x == e })
	if len(byName[e.name]) == 0 {
		delete(byName, e.name)
	}
}

// RemoveResources drops a set. Proxies still assigned to it lose its
// resources.
func (c *Cache) RemoveResources(id string) {
	c.mu.Lock()
	s := c.sets[id]
	if s == nil {
		c.mu.Unlock()
		return
	}
	changed := map[string][]string{}
	for typeURL, ts := range s.types {
		changed[typeURL] = slices.Clone(ts.names())
		for _, sl := range ts.slots {
			c.releaseLocked(typeURL, sl.e)
		}
	}
	delete(c.sets, id)
	var sends []func()
	memo := &changeMemo{lists: lists{}}
	for n := range s.nodes {
		n.sets = slices.DeleteFunc(n.sets, func(x *set) bool { return x == s })
		sends = append(sends, c.changedLocked(n, changed, memo)...)
	}
	c.mu.Unlock()
	for _, send := range sends {
		send()
	}
}

// Assign makes a proxy be served the union of the named sets, which must
// exist and must not hold one name twice for a type.
func (c *Cache) Assign(id string, sets ...string) error {
	c.mu.Lock()
	next := make([]*set, 0, len(sets))
	for _, sid := range sets {
		s := c.sets[sid]
		if s == nil {
			c.mu.Unlock()
			return fmt.Errorf("proxy %s: no resource set %q", id, sid)
		}
		next = append(next, s)
	}
	n := c.nodeLocked(id)
	if slices.Equal(n.sets, next) {
		c.mu.Unlock()
		return nil
	}
	changed := map[string][]string{}
	for _, s := range append(slices.Clone(n.sets), next...) {
		for typeURL, ts := range s.types {
			changed[typeURL] = append(changed[typeURL], ts.names()...)
		}
	}
	for _, s := range n.sets {
		delete(s.nodes, n)
	}
	n.sets = next
	for _, s := range next {
		s.nodes[n] = struct{}{}
	}
	sends := c.changedLocked(n, changed, nil)
	c.mu.Unlock()
	for _, send := range sends {
		send()
	}
	return nil
}

// RemoveProxy forgets a proxy that went away, with the set SetProxy kept
// for it.
func (c *Cache) RemoveProxy(id string) {
	c.mu.Lock()
	if n := c.nodes[id]; n != nil {
		for _, s := range n.sets {
			delete(s.nodes, n)
		}
		delete(c.nodes, id)
	}
	c.mu.Unlock()
	c.RemoveResources(ProxySet(id))
}

// Versions returns the version of each type that the proxy asked for and
// must acknowledge to hold its current configuration.
func (c *Cache) Versions(id string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if n == nil {
		return nil
	}
	out := make(map[string]string, len(n.needed))
	for t, v := range n.needed {
		if n.asked[t] {
			out[t] = v
		}
	}
	return out
}

// changedLocked brings a node's versions up to date after the names in
// changed (by type) changed in one of its sets, and answers its waiting
// watches that the change concerns, returning the sends to do once the
// lock is released.
func (c *Cache) changedLocked(n *node, changed map[string][]string, memo *changeMemo) []func() {
	for typeURL, names := range changed {
		n.changes[typeURL]++
		if len(n.deltas) > 0 {
			n.journal[typeURL] = append(n.journal[typeURL], change{seq: n.changes[typeURL], names: names})
		}
		v, ok := n.versionOf(typeURL)
		if !ok {
			delete(n.versions, typeURL)
			continue
		}
		n.versions[typeURL] = v
		if !n.answered[typeURL] {
			n.needed[typeURL] = v
		}
	}
	var sends []func()
	for w := range n.watches {
		names, ok := changed[w.req.GetTypeUrl()]
		if !ok || !concerns(w.req.GetResourceNames(), names) {
			continue
		}
		if resp := c.respondLocked(n, w); resp != nil {
			delete(n.watches, w)
			sends = append(sends, func() { w.ch <- resp })
		}
	}
	c.deltaChangedLocked(n, changed, memo)
	return sends
}

// concerns says whether a state-of-the-world request for names (all when
// empty) asks for any of the changed ones.
func concerns(requested, changed []string) bool {
	if len(requested) == 0 || slices.Contains(requested, "*") {
		return true
	}
	if len(requested)*len(changed) > 64 {
		want := make(map[string]bool, len(requested))
		for _, r := range requested {
			want[r] = true
		}
		return slices.ContainsFunc(changed, func(c string) bool { return want[c] })
	}
	return slices.ContainsFunc(changed, func(c string) bool { return slices.Contains(requested, c) })
}

// versionOf combines the versions of a type in the node's sets; ok is
// false when none of them has the type.
func (n *node) versionOf(typeURL string) (string, bool) {
	h := fnv.New64a()
	ok := false
	var buf [8]byte
	for _, s := range n.sets {
		ts := s.types[typeURL]
		if ts == nil {
			continue
		}
		ok = true
		h.Write([]byte(s.id))
		for i := range buf {
			buf[i] = byte(ts.sum >> (8 * i))
		}
		h.Write(buf[:])
	}
	return strconv.FormatUint(h.Sum64(), 36), ok
}

// lookup finds a name of a type in the node's sets.
func (n *node) lookup(typeURL, name string) *entry {
	for _, s := range n.sets {
		if sl, ok := s.types[typeURL].slotOf(name); ok {
			return sl.e
		}
	}
	return nil
}

func (ts *typeSet) slotOf(name string) (slot, bool) {
	if ts == nil {
		return slot{}, false
	}
	sl, ok := ts.slots[name]
	return sl, ok
}

// each calls f for every resource of a type in the node's sets, in order.
func (n *node) each(typeURL string, f func(name string, e *entry)) {
	for _, s := range n.sets {
		ts := s.types[typeURL]
		if ts == nil {
			continue
		}
		for _, name := range ts.names() {
			f(name, ts.slots[name].e)
		}
	}
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
	if w.req.GetVersionInfo() == version && !asksForNew(n, w, requested) {
		return nil
	}
	all := len(requested) == 0 || slices.Contains(requested, "*")
	out := &discovery.DiscoveryResponse{VersionInfo: version, TypeUrl: typeURL}
	returned := map[string]string{}
	var names []string
	add := func(name string, e *entry) {
		out.Resources = append(out.Resources, e.any)
		names = append(names, name)
		returned[name] = version
	}
	if all {
		n.each(typeURL, add)
	} else {
		for _, name := range slices.Sorted(slices.Values(requested)) {
			if e := n.lookup(typeURL, name); e != nil {
				add(name, e)
			}
		}
	}
	n.sent[typeURL] = version
	n.answered[typeURL], n.needed[typeURL] = true, version
	resp := &response{req: w.req, out: out, returned: returned, names: names}
	n.lastSent[typeURL] = resp
	return resp
}

// asksForNew says whether the stream asks for a name it has not been sent.
func asksForNew(n *node, w *watch, requested []string) bool {
	var got map[string]string
	if w.sub != nil {
		got = w.sub.ReturnedResources()
	}
	for _, r := range requested {
		if _, sent := got[r]; !sent && n.lookup(w.req.GetTypeUrl(), r) != nil {
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
	n.asked[req.GetTypeUrl()] = true
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

// CreateDeltaWatch is not used: weft serves the delta protocol itself
// (ServeDelta), with less state per stream than go-control-plane's.
func (c *Cache) CreateDeltaWatch(*cachev3.DeltaRequest, cachev3.Subscription, chan cachev3.DeltaResponse) (func(), error) {
	return nil, errors.New("delta xDS is served by the cache's own stream handler")
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
	// names are out.Resources' names, in order.
	names []string
}

func (r *response) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) { return r.out, nil }
func (r *response) GetRequest() *discovery.DiscoveryRequest                     { return r.req }
func (r *response) GetVersion() (string, error)                                 { return r.out.VersionInfo, nil }
func (r *response) GetResponseVersion() string                                  { return r.out.VersionInfo }
func (r *response) GetReturnedResources() map[string]string                     { return r.returned }
func (r *response) GetContext() context.Context                                 { return context.Background() }
