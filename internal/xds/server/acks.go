package server

import (
	"context"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/weftmesh/weft/internal/metrics"
)

// onResponse and onDeltaResponse tell the tracker which version a nonce
// carried, and count the push with its size.
func (s *Server) onResponse(_ context.Context, stream int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	size := 0
	for _, r := range resp.GetResources() {
		size += len(r.GetValue())
	}
	s.noteResponse(stream, resp.GetNonce(), resp.GetTypeUrl(), resp.GetVersionInfo(), size)
}

func (s *Server) onDeltaResponse(stream int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	size := 0
	for _, r := range resp.GetResources() {
		size += len(r.GetResource().GetValue())
	}
	s.noteResponse(stream, resp.GetNonce(), resp.GetTypeUrl(), resp.GetSystemVersionInfo(), size)
}

func (s *Server) noteResponse(stream int64, nonce, typeURL, version string, size int) {
	metrics.Pushes.WithLabelValues(typeURL).Inc()
	metrics.PushSize.WithLabelValues(typeURL).Observe(float64(size))
	if id, ok := s.streams.proxyOf(stream); ok {
		s.acks.Sent(id, typeURL, nonce, version)
	}
}

// Changes signals when what the proxies acknowledged may have changed.
func (s *Server) Changes() <-chan struct{} { return s.acks.Changes() }

// Settled counts the connected proxies, those that hold their current
// configuration, and the time the last of those came to hold it.
func (s *Server) Settled() (total, settled int, last time.Time) { return s.acks.Settled() }

// ProxiesFor counts the connected proxies whose configuration a resource
// shapes, and how many acknowledged its given generation (acks.Tracker).
func (s *Server) ProxiesFor(kind, namespace, name string, generation int64) (total, synced int, rejected string) {
	return s.acks.ProxiesFor(kind, namespace, name, generation)
}

// TakingPlainText counts the connected proxies that serve in plain text
// ports a PeerAuthentication sets STRICT.
func (s *Server) TakingPlainText(kind, namespace, name string) int {
	return s.acks.TakingPlainText(kind, namespace, name)
}

// Flavours counts, by flavour, the connected proxies a resource shapes.
func (s *Server) Flavours(kind, namespace, name string) map[string]int {
	return s.acks.Flavours(kind, namespace, name)
}
