// Package acks is the acknowledgement stage of weft's data plane: it
// tracks what each connected proxy was sent and acknowledged, per xDS type,
// and answers which generation of each MeshService, TrafficPolicy and
// PeerAuthentication the proxies run. The status writers read it (through
// controllers.ProxyView) to write Ready; weft status reads it through CSDS.
// It holds its own lock, apart from the streams'.
package acks

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/metrics"
)

// Stamp records which generation of each MeshService, TrafficPolicy and
// PeerAuthentication a proxy's configuration was made from.
type Stamp map[mesh.Ref]int64

// Stamps are what one proxy's configuration was made from: the stamp of
// its scope, which every proxy of the scope shares, and the stamp of its
// own resources. A resource that appears in several carries one
// generation.
type Stamps []Stamp

// get returns the generation a resource is stamped with.
func (ss Stamps) get(r mesh.Ref) (int64, bool) {
	for _, st := range ss {
		if g, ok := st[r]; ok {
			return g, true
		}
	}
	return 0, false
}

// StampOf is what a model shapes in the configuration of a proxy given
// some of its services (its scope): their MeshServices, the
// TrafficPolicies in force on them, and the PeerAuthentications that set
// their endpoints' mTLS modes (the TLS of every cluster that reaches
// them).
func StampOf(m *mesh.Model, services []string) Stamp {
	st := Stamp{}
	for _, key := range services {
		s := m.Services[key]
		if s == nil {
			continue
		}
		st[mesh.Ref{Kind: mesh.KindMeshService, Namespace: s.Namespace, Name: s.Name}] = s.Generation
		// Every policy in force, one per port at most.
		for _, p := range s.Policies {
			st[mesh.Ref{Kind: mesh.KindTrafficPolicy, Namespace: s.Namespace, Name: p.Name}] = p.Generation
		}
		for _, e := range s.Endpoints {
			for _, r := range e.ModeBy {
				if r.Kind != "" {
					st[r] = m.Shaping[r]
				}
			}
		}
	}
	return st
}

// Tracker tracks the acknowledgements of the connected proxies.
type Tracker struct {
	// versions says which version of each type the cache holds for a
	// proxy now: what it must acknowledge to hold its configuration.
	versions func(proxy string) map[string]string
	log      logr.Logger

	mu      sync.Mutex
	proxies map[string]*state
	changes chan struct{}
	// open is the round of the model being pushed (StartRound); rounds
	// are earlier ones that proxies still owe acknowledgements for,
	// oldest first.
	open   *round
	rounds []*round
}

// round is one model's push, for metrics.Propagation: when its change was
// seen, and the proxies whose configuration it changed that have not
// acknowledged it yet.
type round struct {
	changed time.Time
	owing   map[string]bool
	// touched says it changed some proxy's configuration; acked that one
	// of them acknowledged it.
	touched, acked bool
}

// maxRounds bounds the rounds kept waiting for acknowledgements (a proxy
// that rejects its configuration owes them until it accepts a later one):
// the oldest is dropped unobserved.
const maxRounds = 64

// state is what one proxy was sent and acknowledged.
type state struct {
	// pushed is the stamp of what the cache holds for the proxy now;
	// acked the stamp of what it last acknowledged in full.
	pushed, acked Stamps
	// ackedVersions by type; nonces maps a response's "<type>/<nonce>" to
	// its version.
	ackedVersions map[string]string
	nonces        map[string]string
	// rejected says why the proxy refused its configuration, if it did;
	// nacks holds the last NACK message per type.
	rejected string
	nacks    map[string]string
	// settled says whether the proxy acknowledged the version of every
	// type it must hold, and settledAt when it last came to. waitingSince
	// is when, not settled, it was first sent what it has not acknowledged
	// since (zero while settled, or while it asked for nothing).
	settled      bool
	settledAt    time.Time
	waitingSince time.Time
	// flavour is the proxy's ("envoy" or "grpc").
	flavour string
	// versions are the cache's versions for it at its last push.
	versions map[string]string
	// plain are the PeerAuthentications whose STRICT mode the proxy's
	// servers do not enforce (PlainText).
	plain []mesh.Ref
}

// New returns a tracker that reads the cache's versions per proxy from
// versions.
func New(versions func(proxy string) map[string]string, log logr.Logger) *Tracker {
	return &Tracker{versions: versions, log: log, proxies: map[string]*state{}, changes: make(chan struct{}, 1)}
}

// Connect starts tracking a proxy.
func (t *Tracker) Connect(id, flavour string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.proxies[id] == nil {
		t.proxies[id] = &state{ackedVersions: map[string]string{}, nonces: map[string]string{}, nacks: map[string]string{}, flavour: flavour}
		metrics.Proxies.WithLabelValues(flavour).Inc()
	}
}

// Flavours counts, by flavour, the connected proxies whose configuration
// a resource shapes.
func (t *Tracker) Flavours(kind, namespace, name string) map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := mesh.Ref{Kind: kind, Namespace: namespace, Name: name}
	out := map[string]int{}
	for _, a := range t.proxies {
		if _, in := a.pushed.get(key); in {
			out[a.flavour]++
		}
	}
	return out
}

// Disconnect forgets a proxy.
func (t *Tracker) Disconnect(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.proxies[id]
	if a == nil {
		return
	}
	delete(t.proxies, id)
	metrics.Proxies.WithLabelValues(a.flavour).Dec()
	// The rounds it owed do not wait for it.
	t.paidLocked(id, false)
	t.notify()
}

// StartRound opens the round of a model whose first change was seen at
// changed: the proxies whose configuration changes until EndRound owe it
// their acknowledgement. The scheduler calls both around its pushes of a
// model.
func (t *Tracker) StartRound(changed time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open = &round{changed: changed, owing: map[string]bool{}}
}

// EndRound closes the open round: observed at once when every proxy it
// changed has acknowledged it already, kept until they have otherwise,
// forgotten when it changed no proxy's configuration.
func (t *Tracker) EndRound() {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.open
	t.open = nil
	switch {
	case r == nil || !r.touched:
	case len(r.owing) == 0:
		metrics.Propagation.Observe(time.Since(r.changed).Seconds())
	default:
		if len(t.rounds) == maxRounds {
			t.rounds = slices.Delete(t.rounds, 0, 1)
		}
		t.rounds = append(t.rounds, r)
	}
}

// paidLocked settles what a proxy owes the rounds: it acknowledged (acked)
// or left. A closed round that nobody owes any more is observed if one of
// its proxies acknowledged it, and forgotten.
func (t *Tracker) paidLocked(id string, acked bool) {
	if r := t.open; r != nil && r.owing[id] {
		delete(r.owing, id)
		r.acked = r.acked || acked
	}
	kept := t.rounds[:0]
	for _, r := range t.rounds {
		if r.owing[id] {
			delete(r.owing, id)
			r.acked = r.acked || acked
		}
		if len(r.owing) > 0 {
			kept = append(kept, r)
			continue
		}
		if r.acked {
			metrics.Propagation.Observe(time.Since(r.changed).Seconds())
		}
	}
	clear(t.rounds[len(kept):])
	t.rounds = kept
}

// Sent remembers which version the response with nonce carried.
func (t *Tracker) Sent(id, typeURL, nonce, version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.proxies[id]; a != nil {
		a.nonces[typeURL+"/"+nonce] = version
	}
}

// Pushed records the stamps of what the cache now holds for a proxy.
func (t *Tracker) Pushed(id string, st ...Stamp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.proxies[id]
	if a == nil {
		return
	}
	a.pushed = st
	versions := t.versions(id)
	changed := !maps.Equal(versions, a.versions)
	a.versions = versions
	t.settleLocked(id, a, versions)
	if r := t.open; r != nil && changed {
		r.touched = true
		if a.settled {
			// It acknowledged the new versions before they were recorded.
			r.acked = true
		} else {
			r.owing[id] = true
		}
	}
}

// PlainText records the PeerAuthentications that set STRICT on ports a
// proxy serves in plain text (a proxyless gRPC server without a
// certificate), replacing what was recorded before.
func (t *Tracker) PlainText(id string, refs []mesh.Ref) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.proxies[id]; a != nil && !slices.Equal(a.plain, refs) {
		a.plain = refs
		t.notify()
	}
}

// TakingPlainText counts the connected proxies that serve in plain text
// ports a resource sets STRICT.
func (t *Tracker) TakingPlainText(kind, namespace, name string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := mesh.Ref{Kind: kind, Namespace: namespace, Name: name}
	n := 0
	for _, a := range t.proxies {
		if slices.Contains(a.plain, key) {
			n++
		}
	}
	return n
}

// Replied records an ACK (nack empty) or a NACK of the response with
// nonce. For a NACK of a response it sent, it returns what the proxy
// rejected ("proxy p rejected <type> version v: <why>").
func (t *Tracker) Replied(id, typeURL, nonce, nack string) (rejected string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.proxies[id]
	if a == nil || nonce == "" {
		return ""
	}
	version, ok := a.nonces[typeURL+"/"+nonce]
	if !ok {
		return ""
	}
	delete(a.nonces, typeURL+"/"+nonce)
	if nack != "" {
		a.rejected = fmt.Sprintf("proxy %s rejected %s version %s: %s", id, typeURL, version, nack)
		a.nacks[typeURL] = fmt.Sprintf("version %s: %s", version, nack)
		t.log.Info("A proxy rejected its configuration", "proxy", id, "type", typeURL, "version", version, "reason", nack)
		metrics.NACKs.WithLabelValues(typeURL, a.flavour).Inc()
		rejected = a.rejected
	} else {
		a.ackedVersions[typeURL] = version
		delete(a.nacks, typeURL)
	}
	t.settleLocked(id, a, t.versions(id))
	return rejected
}

// settleLocked marks what a proxy holds as acknowledged once it has acked
// the cache's current version of every type it asked for. A proxy that
// asks for its types one after another (a gRPC client: Listener, then
// routes, clusters, endpoints) counts as holding what it acknowledged so
// far between two of its requests.
func (t *Tracker) settleLocked(id string, a *state, versions map[string]string) {
	a.settled = false
	if len(versions) == 0 {
		// It has asked for nothing yet: it holds nothing, and owes nothing.
		a.waitingSince = time.Time{}
		return
	}
	for typeURL, v := range versions {
		if a.ackedVersions[typeURL] != v {
			if a.waitingSince.IsZero() {
				a.waitingSince = time.Now()
			}
			return
		}
	}
	a.acked, a.rejected = a.pushed, ""
	a.settled, a.settledAt, a.waitingSince = true, time.Now(), time.Time{}
	t.paidLocked(id, true)
	t.notify()
}

func (t *Tracker) notify() {
	select {
	case t.changes <- struct{}{}:
	default:
	}
}

// Changes signals when what the proxies acknowledged may have changed.
func (t *Tracker) Changes() <-chan struct{} { return t.changes }

// Settled counts the connected proxies, those that hold their current
// configuration (they acknowledged the version of every type), and the
// time the last of those came to hold it.
func (t *Tracker) Settled() (total, settled int, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.proxies {
		total++
		if a.settled {
			settled++
			if a.settledAt.After(last) {
				last = a.settledAt
			}
		}
	}
	return total, settled, last
}

// Waiting returns, by flavour, the earliest time since which a connected
// proxy has held configuration it was sent but has not acknowledged (it
// has not ACKed the current version of every type it asked for, or it
// rejected one); a flavour whose proxies all hold their configuration is
// absent. It looks at every proxy: call it now and then, not per event.
func (t *Tracker) Waiting() map[string]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]time.Time{}
	for _, a := range t.proxies {
		if since := a.waitingSince; !since.IsZero() {
			if first, ok := out[a.flavour]; !ok || since.Before(first) {
				out[a.flavour] = since
			}
		}
	}
	return out
}

// ReportWaiting keeps metrics.Unacknowledged at what Waiting says,
// looking every period, until ctx ends.
func (t *Tracker) ReportWaiting(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	reported := map[string]bool{}
	defer func() {
		for flavour := range reported {
			metrics.Unacknowledged.DeleteLabelValues(flavour)
		}
	}()
	for {
		waiting := t.Waiting()
		for flavour, since := range waiting {
			metrics.Unacknowledged.WithLabelValues(flavour).Set(float64(since.Unix()))
			reported[flavour] = true
		}
		for flavour := range reported {
			if _, ok := waiting[flavour]; !ok {
				metrics.Unacknowledged.DeleteLabelValues(flavour)
				delete(reported, flavour)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ProxiesFor counts the connected proxies whose configuration a resource
// (mesh.KindMeshService, KindTrafficPolicy or KindPeerAuthentication)
// shapes, and how many of them have acknowledged configuration made from
// its given generation. rejected says why a proxy refused its
// configuration, if one did.
func (t *Tracker) ProxiesFor(kind, namespace, name string, generation int64) (total, synced int, rejected string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := mesh.Ref{Kind: kind, Namespace: namespace, Name: name}
	for _, a := range t.proxies {
		if _, in := a.pushed.get(key); !in {
			continue
		}
		total++
		if g, _ := a.acked.get(key); g == generation {
			synced++
		}
		if a.rejected != "" && rejected == "" {
			rejected = a.rejected
		}
	}
	return total, synced, rejected
}

// Acknowledged returns the generation of each resource that the
// configuration a proxy last acknowledged in full was made from (a copy;
// empty until it has acknowledged everything once).
func (t *Tracker) Acknowledged(id string) map[mesh.Ref]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[mesh.Ref]int64{}
	if a := t.proxies[id]; a != nil {
		// The scope's stamp first: a proxy's own stamp carries the same
		// generations where both hold a resource.
		for _, st := range a.acked {
			for r, g := range st {
				out[r] = g
			}
		}
	}
	return out
}

// Replies returns what a proxy last acknowledged and the last NACK message
// of each type (copies), for weft status.
func (t *Tracker) Replies(id string) (acked, nacked map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.proxies[id]
	if a == nil {
		return nil, nil
	}
	return maps.Clone(a.ackedVersions), maps.Clone(a.nacks)
}
