package cache

import (
	"context"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// ADS serves the aggregated discovery service from a cache:
// state-of-the-world streams through go-control-plane's server, delta
// streams through the cache's own handler.
type ADS struct {
	serverv3.Server
	cache     *Cache
	callbacks serverv3.Callbacks
}

// NewADS returns the service over c; cb (nil for none) is told of every
// stream of either protocol.
func NewADS(ctx context.Context, c *Cache, cb serverv3.Callbacks) *ADS {
	if cb == nil {
		cb = serverv3.CallbackFuncs{}
	}
	return &ADS{Server: serverv3.NewServer(ctx, c, cb), cache: c, callbacks: cb}
}

// DeltaAggregatedResources serves one delta stream.
func (a *ADS) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.cache.ServeDelta(stream, a.callbacks)
}
