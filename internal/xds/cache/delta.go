package cache

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The delta protocol is served here rather than by go-control-plane's
// delta server, which keeps a map of every resource's name and version
// per stream and type (hundreds of KiB per proxy in a mesh of a thousand
// services). A stream here holds its subscription and one number per
// type: how far into its node's changes it has been told. A change is
// sent as the names it concerned, read from the node's journal; a name no
// longer there goes out as removed, which the protocol allows even for a
// name the client never had.

// DeltaCallbacks are told of a delta stream's life; go-control-plane's
// server callbacks fit.
type DeltaCallbacks interface {
	OnDeltaStreamOpen(ctx context.Context, streamID int64, typeURL string) error
	OnDeltaStreamClosed(streamID int64, node *corev3.Node)
	OnStreamDeltaRequest(streamID int64, req *discovery.DeltaDiscoveryRequest) error
	OnStreamDeltaResponse(streamID int64, req *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse)
}

// maxJournal bounds how many changes a stream may fall behind; one that
// falls further (it has not acknowledged anything for that long) is ended
// and comes back with what it holds.
const maxJournal = 1024

// deltaStreamIDs numbers delta streams apart from go-control-plane's
// state-of-the-world streams, which count from 1.
const deltaStreamIDs = int64(1) << 40

// DeltaStream is one delta xDS stream's state.
type DeltaStream struct {
	id    int64
	node  *node
	types map[string]*deltaType
	// pending holds responses made while the stream was waiting, to be
	// sent by the stream's goroutine; ready signals them.
	pending []*discovery.DeltaDiscoveryResponse
	ready   chan struct{}
	err     error
}

// deltaType is a stream's state for one type.
type deltaType struct {
	wildcard   bool
	subscribed map[string]struct{}
	// initial is what the client said it holds on its first request,
	// until the first response.
	initial map[string]string
	// fresh are names newly subscribed, to be sent whether or not they
	// changed.
	fresh []string
	// seq is the node's change count for the type that the stream has
	// been sent up to; started says it has been sent a first response.
	seq     uint64
	started bool
	// waiting says the stream acknowledged its last response and waits
	// for a change; req is its last request.
	waiting bool
	req     *discovery.DeltaDiscoveryRequest
}

func (t *deltaType) wants(name string) bool {
	if t.wildcard {
		return true
	}
	_, ok := t.subscribed[name]
	return ok
}

// ServeDelta serves one DeltaAggregatedResources stream.
func (c *Cache) ServeDelta(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, cb DeltaCallbacks) error {
	ds := &DeltaStream{id: deltaStreamIDs + c.deltaStreams.Add(1), types: map[string]*deltaType{}, ready: make(chan struct{}, 1)}
	if err := cb.OnDeltaStreamOpen(stream.Context(), ds.id, ""); err != nil {
		return err
	}
	var node *corev3.Node
	defer func() {
		c.closeDelta(ds)
		cb.OnDeltaStreamClosed(ds.id, node)
	}()
	reqs := make(chan *discovery.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	var nonce int64
	send := func(resp *discovery.DeltaDiscoveryResponse, req *discovery.DeltaDiscoveryRequest) error {
		nonce++
		resp.Nonce = strconv.FormatInt(nonce, 10)
		cb.OnStreamDeltaResponse(ds.id, req, resp)
		return stream.Send(resp)
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case req := <-reqs:
			if req.GetNode() != nil {
				node = req.GetNode()
			} else {
				req.Node = node
			}
			if req.GetTypeUrl() == "" {
				return status.Error(codes.InvalidArgument, "type URL is required for ADS")
			}
			if err := cb.OnStreamDeltaRequest(ds.id, req); err != nil {
				return err
			}
			resp, err := c.deltaRequest(ds, req)
			if err != nil {
				return err
			}
			if resp != nil {
				if err := send(resp, req); err != nil {
					return err
				}
			}
		case <-ds.ready:
			resps, reqsOf, err := c.takePending(ds)
			if err != nil {
				return err
			}
			for i, resp := range resps {
				if err := send(resp, reqsOf[i]); err != nil {
					return err
				}
			}
		}
	}
}

// deltaRequest takes a request: the first of the stream names the node;
// each updates the type's subscription and acknowledges (or rejects) the
// last response. It returns what the stream is owed now, if anything;
// otherwise the type waits for a change.
func (c *Cache) deltaRequest(ds *DeltaStream, req *discovery.DeltaDiscoveryRequest) (*discovery.DeltaDiscoveryResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ds.node == nil {
		id := req.GetNode().GetId()
		if id == "" {
			return nil, status.Error(codes.InvalidArgument, "the first request of a stream names no node")
		}
		ds.node = c.nodeLocked(id)
		ds.node.deltas[ds] = struct{}{}
	}
	typeURL := req.GetTypeUrl()
	ds.node.asked[typeURL] = true
	t := ds.types[typeURL]
	if t == nil {
		// The first request of a type that names nothing subscribes to
		// everything (the protocol's legacy wildcard).
		t = &deltaType{wildcard: len(req.GetResourceNamesSubscribe()) == 0, subscribed: map[string]struct{}{}, initial: req.GetInitialResourceVersions()}
		ds.types[typeURL] = t
	}
	t.req = req
	for _, name := range req.GetResourceNamesSubscribe() {
		if name == "*" {
			t.wildcard = true
			continue
		}
		if _, ok := t.subscribed[name]; !ok {
			t.subscribed[name] = struct{}{}
			t.fresh = append(t.fresh, name)
		}
	}
	for _, name := range req.GetResourceNamesUnsubscribe() {
		if name == "*" {
			t.wildcard = false
			continue
		}
		delete(t.subscribed, name)
		if t.wildcard {
			t.fresh = append(t.fresh, name) // still wanted: say whether it exists
		}
	}
	resp, err := c.deltaNextLocked(ds.node, t, typeURL, nil)
	t.waiting = resp == nil && err == nil
	c.trimJournalLocked(ds.node, typeURL)
	return resp, err
}

// changeMemo carries what one change of a set has in common across the
// nodes it reaches: the lists of resources responses share, and, per type,
// the response of a stream that subscribes to everything and had been told
// of every earlier change (templates), which every such stream of a node
// that sees the changed names through the same set receives alike.
type changeMemo struct {
	lists     lists
	src       *set
	templates map[string]*discovery.DeltaDiscoveryResponse
}

// template returns the response a stream is owed for one change when the
// change's common response serves: the stream subscribes to everything,
// was told of every earlier change, has nothing newly subscribed, and no
// other set of its node holds any of the changed names. It makes and
// remembers that response the first time.
func (c *Cache) templateLocked(n *node, t *deltaType, typeURL string, names []string, memo *changeMemo) (*discovery.DeltaDiscoveryResponse, bool) {
	if memo == nil || memo.src == nil || !t.wildcard || !t.started || len(t.fresh) > 0 || t.seq+1 != n.changes[typeURL] {
		return nil, false
	}
	if !slices.Contains(n.sets, memo.src) {
		return nil, false
	}
	for _, s := range n.sets {
		ts := s.types[typeURL]
		if s == memo.src || ts == nil || len(ts.slots) == 0 {
			continue
		}
		for _, name := range names {
			if _, ok := ts.slots[name]; ok {
				return nil, false
			}
		}
	}
	tmpl, ok := memo.templates[typeURL]
	if !ok {
		tmpl = &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL}
		src := memo.src.types[typeURL]
		for _, name := range names {
			if sl, ok := src.slotOf(name); ok {
				tmpl.Resources = append(tmpl.Resources, &discovery.Resource{Name: name, Version: sl.e.version, Resource: sl.e.any})
			} else {
				tmpl.RemovedResources = append(tmpl.RemovedResources, name)
			}
		}
		tmpl.Resources = memo.lists.share(typeURL, tmpl.Resources)
		slices.Sort(tmpl.RemovedResources)
		memo.templates[typeURL] = tmpl
	}
	t.seq = n.changes[typeURL]
	if len(tmpl.Resources) == 0 && len(tmpl.RemovedResources) == 0 {
		return nil, true
	}
	version := n.versions[typeURL]
	n.answered[typeURL], n.needed[typeURL] = true, version
	return &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: version,
		Resources: tmpl.Resources, RemovedResources: tmpl.RemovedResources}, true
}

// deltaChangedLocked answers the node's waiting delta streams after a
// change of the given names.
func (c *Cache) deltaChangedLocked(n *node, changed map[string][]string, memo *changeMemo) {
	var shared lists
	if memo != nil {
		shared = memo.lists
	}
	for ds := range n.deltas {
		signal := false
		for typeURL, names := range changed {
			t := ds.types[typeURL]
			if t == nil || !t.waiting {
				continue
			}
			if _, ok := n.versions[typeURL]; !ok {
				continue
			}
			if resp, ok := c.templateLocked(n, t, typeURL, names, memo); ok {
				if resp != nil {
					t.waiting = false
					ds.pending = append(ds.pending, resp)
					signal = true
				}
				continue
			}
			resp, err := c.deltaNextLocked(n, t, typeURL, shared)
			if err != nil {
				ds.err, signal = err, true
				continue
			}
			if resp != nil {
				t.waiting = false
				ds.pending = append(ds.pending, resp)
				signal = true
			}
		}
		if signal {
			select {
			case ds.ready <- struct{}{}:
			default:
			}
		}
	}
	for typeURL := range changed {
		c.trimJournalLocked(n, typeURL)
	}
}

// takePending hands the stream's goroutine the responses made for it,
// with the request each answers.
func (c *Cache) takePending(ds *DeltaStream) ([]*discovery.DeltaDiscoveryResponse, []*discovery.DeltaDiscoveryRequest, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resps := ds.pending
	ds.pending = nil
	reqs := make([]*discovery.DeltaDiscoveryRequest, len(resps))
	for i, r := range resps {
		reqs[i] = ds.types[r.TypeUrl].req
	}
	return resps, reqs, ds.err
}

// deltaNextLocked makes the response a stream is owed for a type, or nil.
// The first response holds everything the stream subscribes to (less what
// it said it holds at the same version) and removes what it holds that is
// gone; later ones hold what changed since the stream was last sent.
func (c *Cache) deltaNextLocked(n *node, t *deltaType, typeURL string, memo lists) (*discovery.DeltaDiscoveryResponse, error) {
	version, ok := n.versions[typeURL]
	if !ok {
		return nil, nil // nothing of the type yet
	}
	out := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL, SystemVersionInfo: version}
	add := func(name string, e *entry) {
		out.Resources = append(out.Resources, &discovery.Resource{Name: name, Version: e.version, Resource: e.any})
	}
	first := !t.started
	if first {
		n.each(typeURL, func(name string, e *entry) {
			if t.wants(name) && t.initial[name] != e.version {
				add(name, e)
			}
		})
		for name := range t.initial {
			if n.lookup(typeURL, name) == nil {
				out.RemovedResources = append(out.RemovedResources, name)
			}
		}
		out.Resources = c.firstLists.latest(typeURL, out.Resources)
		t.initial, t.started, t.fresh = nil, true, nil
	} else {
		names, err := c.sinceLocked(n, typeURL, t.seq)
		if err != nil {
			return nil, err
		}
		if len(t.fresh) > 0 {
			names = dedupe(append(slices.Clone(names), t.fresh...))
			t.fresh = nil
		}
		for _, name := range names {
			if e := n.lookup(typeURL, name); e != nil {
				if t.wants(name) {
					add(name, e)
				}
			} else if t.wants(name) {
				out.RemovedResources = append(out.RemovedResources, name)
			}
		}
		out.Resources = memo.share(typeURL, out.Resources)
	}
	t.seq = n.changes[typeURL]
	if !first && len(out.Resources) == 0 && len(out.RemovedResources) == 0 {
		return nil, nil
	}
	slices.Sort(out.RemovedResources)
	n.answered[typeURL], n.needed[typeURL] = true, version
	return out, nil
}

// sinceLocked returns the names the node's changes of a type after seq
// concerned.
func (c *Cache) sinceLocked(n *node, typeURL string, seq uint64) ([]string, error) {
	j := n.journal[typeURL]
	i, _ := slices.BinarySearchFunc(j, seq+1, func(ch change, s uint64) int { return cmp.Compare(ch.seq, s) })
	if seq < n.changes[typeURL] && (i == len(j) || j[i].seq != seq+1) {
		return nil, status.Errorf(codes.Unavailable, "the stream fell more than %d changes behind; reconnect", maxJournal)
	}
	switch rest := j[i:]; len(rest) {
	case 0:
		return nil, nil
	case 1:
		return rest[0].names, nil
	default:
		var all []string
		for _, ch := range rest {
			all = append(all, ch.names...)
		}
		return dedupe(all), nil
	}
}

// trimJournalLocked drops the changes every delta stream of the node has
// been sent, and the oldest beyond maxJournal.
func (c *Cache) trimJournalLocked(n *node, typeURL string) {
	j := n.journal[typeURL]
	if len(j) == 0 {
		return
	}
	low := n.changes[typeURL]
	for ds := range n.deltas {
		if t := ds.types[typeURL]; t != nil && t.started {
			low = min(low, t.seq)
		}
	}
	drop := 0
	for drop < len(j) && (j[drop].seq <= low || len(j)-drop > maxJournal) {
		drop++
	}
	if drop == len(j) {
		delete(n.journal, typeURL)
		return
	}
	n.journal[typeURL] = slices.Clone(j[drop:])
}

// closeDelta forgets a stream that ended.
func (c *Cache) closeDelta(ds *DeltaStream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ds.node != nil {
		delete(ds.node.deltas, ds)
		if len(ds.node.deltas) == 0 {
			clear(ds.node.journal)
		}
	}
}

func dedupe(names []string) []string {
	slices.Sort(names)
	return slices.Compact(names)
}
