package server

import (
	"context"
	"fmt"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/weftmesh/weft/internal/mesh"
)

// stamp records which generation of each MeshService and TrafficPolicy a
// proxy's configuration was translated from, by "<Kind>/<ns>/<name>".
type stamp map[string]int64

func stampOf(m *mesh.Model) stamp {
	st := stamp{}
	for _, key := range m.Order {
		s := m.Services[key]
		st["MeshService/"+key] = s.Generation
		if s.Policy != "" {
			st["TrafficPolicy/"+s.Namespace+"/"+s.Policy] = s.PolicyGeneration
		}
	}
	return st
}

// ackState is what one proxy acknowledged.
type ackState struct {
	// pushed is the stamp of what the cache holds for the proxy now;
	// acked the stamp of what it last acknowledged in full.
	pushed, acked stamp
	// ackedVersions by type; nonces maps a response's nonce to its version.
	ackedVersions map[string]string
	nonces        map[string]string
	// rejected says why the proxy refused its configuration, if it did;
	// nacks holds the last NACK message per type.
	rejected string
	nacks    map[string]string
	// settled says whether the proxy acknowledged the version of every
	// type it must hold, and settledAt when it last came to.
	settled   bool
	settledAt time.Time
}

func newAckState() *ackState {
	return &ackState{ackedVersions: map[string]string{}, nonces: map[string]string{}, nacks: map[string]string{}}
}

// onResponse remembers which version a nonce carried.
func (s *Server) onResponse(_ context.Context, stream int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	s.noteResponse(stream, resp.GetNonce(), resp.GetTypeUrl(), resp.GetVersionInfo())
}

func (s *Server) onDeltaResponse(stream int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	s.noteResponse(stream, resp.GetNonce(), resp.GetTypeUrl(), resp.GetSystemVersionInfo())
}

func (s *Server) noteResponse(stream int64, nonce, typeURL, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.acks[s.streams[stream]]; a != nil {
		a.nonces[typeURL+"/"+nonce] = version
	}
}

// noteReply records an ACK or a NACK of the response with nonce.
func (s *Server) noteReplyLocked(id, typeURL, nonce string, nack string) {
	a := s.acks[id]
	if a == nil || nonce == "" {
		return
	}
	version, ok := a.nonces[typeURL+"/"+nonce]
	if !ok {
		return
	}
	delete(a.nonces, typeURL+"/"+nonce)
	if nack != "" {
		a.rejected = fmt.Sprintf("proxy %s rejected %s version %s: %s", id, typeURL, version, nack)
		a.nacks[typeURL] = fmt.Sprintf("version %s: %s", version, nack)
		s.Log.Info("A proxy rejected its configuration", "proxy", id, "type", typeURL, "version", version, "reason", nack)
		nacks.WithLabelValues(typeURL).Inc()
	} else {
		a.ackedVersions[typeURL] = version
		delete(a.nacks, typeURL)
	}
	s.settleLocked(id)
}

// settleLocked marks what a proxy holds as acknowledged once it has acked
// the cache's current version of every type.
func (s *Server) settleLocked(id string) {
	a := s.acks[id]
	if a == nil {
		return
	}
	a.settled = false
	for typeURL, v := range s.cache.Versions(id) {
		if a.ackedVersions[typeURL] != v {
			return
		}
	}
	a.acked, a.rejected = a.pushed, ""
	a.settled, a.settledAt = true, time.Now()
	s.notify()
}

func (s *Server) notify() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// Changes signals when what the proxies acknowledged may have changed.
func (s *Server) Changes() <-chan struct{} { return s.changes }

// Settled counts the connected proxies, those that hold their current
// configuration (they acknowledged the version of every type), and the
// time the last of those came to hold it.
func (s *Server) Settled() (total, settled int, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.acks {
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

// ProxiesFor counts the connected proxies whose configuration includes a
// resource ("MeshService" or "TrafficPolicy"), and how many of them have
// acknowledged configuration made from its given generation. rejected says
// why a proxy refused its configuration, if one did.
func (s *Server) ProxiesFor(kind, namespace, name string, generation int64) (total, synced int, rejected string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := kind + "/" + namespace + "/" + name
	for _, a := range s.acks {
		if _, in := a.pushed[key]; !in {
			continue
		}
		total++
		if a.acked[key] == generation {
			synced++
		}
		if a.rejected != "" && rejected == "" {
			rejected = a.rejected
		}
	}
	return total, synced, rejected
}
