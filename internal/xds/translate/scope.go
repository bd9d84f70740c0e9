package translate

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/internal/mesh"
)

// This file holds scoping: a proxy is given only the services its
// identity may call (mesh.Model.ScopeOf). The shared sets of a Shared
// hold every service (the scope mesh.ScopeAll); a narrower scope's set is
// put together from the same per-service objects, so that it costs the
// outbound listener of its services and nothing else, and is made once
// per model for every proxy of the scope.

// ScopeOf is the scope of a caller in the model.
func (sh *Shared) ScopeOf(c mesh.Caller) mesh.Scope { return sh.model.ScopeOf(c) }

// CallerOf is the identity a proxy's pod runs as, by the model.
func (sh *Shared) CallerOf(pod string) mesh.Caller { return sh.model.CallerOf(pod) }

// Model is the model the Shared was made from.
func (sh *Shared) Model() *mesh.Model { return sh.model }

// scopedSets remembers the sets made for each scope and variant from one
// Shared.
type scopedSets struct {
	mu   sync.Mutex
	sets map[scopeKey]*Resources
}

type scopeKey struct {
	variant Variant
	scope   string
}

// Scoped returns what proxies of a variant whose scope is sc share: the
// variant's shared set narrowed to the scope's services. The result is
// validated, made once per scope and variant, and shared by its callers,
// who must not change it.
func (sh *Shared) Scoped(v Variant, sc mesh.Scope) (*Resources, error) {
	if sc.ID == mesh.ScopeAll {
		switch v {
		case VariantEnvoy:
			return sh.Envoy, nil
		case VariantGRPCMTLS:
			return sh.GRPCMTLS, nil
		}
		return sh.GRPC, nil
	}
	sh.scoped.mu.Lock()
	defer sh.scoped.mu.Unlock()
	k := scopeKey{v, sc.ID}
	if r, ok := sh.scoped.sets[k]; ok {
		return r, nil
	}
	r, err := sh.scope(v, sc)
	if err != nil {
		return nil, fmt.Errorf("scope %s: %w", sc.ID, err)
	}
	if sh.scoped.sets == nil {
		sh.scoped.sets = map[scopeKey]*Resources{}
	}
	sh.scoped.sets[k] = r
	return r, nil
}

func (sh *Shared) scope(v Variant, sc mesh.Scope) (*Resources, error) {
	r := &Resources{}
	if v != VariantEnvoy {
		for _, key := range sc.Services {
			if out := sh.services[key]; out != nil {
				r.add(&out.api)
				if v == VariantGRPCMTLS {
					r.add(&out.grpcMTLS)
				} else {
					r.add(&out.grpcHTTP)
				}
			}
		}
		return r, nil
	}
	var chains []*listenerv3.FilterChain
	reg := decoded{}
	for _, key := range sc.Services {
		if out := sh.services[key]; out != nil {
			r.add(&out.envoyHTTP)
			r.add(&out.envoyTCP)
			chains = append(chains, out.chains...)
			maps.Copy(reg, out.decoded)
		}
	}
	slices.SortFunc(chains, func(a, b *listenerv3.FilterChain) int { return strings.Compare(a.Name, b.Name) })
	full := sh.outbound()
	lis := &listenerv3.Listener{Name: full.Name, Address: full.Address, ListenerFilters: full.ListenerFilters,
		FilterChains: chains, DefaultFilterChain: full.DefaultFilterChain}
	// Every other resource of the flavour that is not a service's (the
	// passthrough and tracing clusters) comes along.
	for _, c := range sh.Envoy.Clusters {
		if c.Name == PassthroughCluster || c.Name == TracingCluster {
			r.Clusters = append(r.Clusters, c)
		}
	}
	r.Listeners = append(r.Listeners, lis)
	if err := errors.Join(lis.ValidateAll(), (&Resources{Listeners: []*listenerv3.Listener{lis}}).checkRefs(namesOf(r), reg)); err != nil {
		return nil, err
	}
	return r, nil
}
