// Package translate turns the mesh model into xDS resources for one proxy.
// Every function here is pure: the same model and proxy give the same
// resources, which are validated (ValidateAll) and checked for dangling
// references before they are returned.
//
// One file per resource: listeners.go, routes.go, clusters.go and
// endpoints.go hold the pure functions from model to each resource type
// (envoy*.go and proxyless_tls.go the flavour-specific ones), refs.go the
// reference checks, memo.go the reuse memo that makes translation
// incremental. Two entry points: BuildShared for what every proxy of a
// flavour shares, Own for one proxy's own resources.
package translate

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// Proxy is the proxy being configured.
type Proxy struct {
	ID        string
	Namespace string
	Flavour   wire.Flavour
	// Pod is "<namespace>/<name>" of the proxy's pod (Envoy sidecars): its
	// endpoints get inbound filter chains.
	Pod string
	// Delivery is how the proxy's workload gets its certificate: what it
	// was injected with (its node's wire.MetaCertDelivery), or the
	// controller's for a proxy that does not say. A proxyless gRPC proxy
	// speaks mTLS only with pod certificates, which its bootstrap's
	// certificate provider reads: grpc-go has no SDS, and TLS naming a
	// provider its bootstrap lacks is refused (a NACK). Sidecars take
	// their certificates over SDS whatever it says.
	Delivery wire.CertDelivery
}

// Variant is what, besides its scope, decides the shared set a proxy gets:
// its flavour and, for proxyless gRPC, whether it speaks mTLS.
type Variant string

const (
	// VariantEnvoy is every Envoy sidecar.
	VariantEnvoy Variant = "envoy"
	// VariantGRPC is proxyless gRPC without certificates of its own (SDS
	// delivery): plain text whatever the PeerAuthentications say.
	VariantGRPC Variant = "grpc"
	// VariantGRPCMTLS is proxyless gRPC with pod certificates: mTLS to
	// STRICT endpoints, with its bootstrap's certificate provider.
	VariantGRPCMTLS Variant = "grpc-mtls"
)

// MTLS says whether a proxyless proxy has certificates to speak mTLS
// with: it was injected with pod certificates.
func (p Proxy) MTLS() bool {
	return p.Flavour == wire.FlavourGRPC && p.Delivery == wire.DeliveryPodCertificate
}

// Variant is the proxy's variant.
func (p Proxy) Variant() Variant {
	switch {
	case p.Flavour == wire.FlavourEnvoy:
		return VariantEnvoy
	case p.MTLS():
		return VariantGRPCMTLS
	}
	return VariantGRPC
}

// Flavour is the flavour of the variant's proxies.
func (v Variant) Flavour() wire.Flavour {
	if v == VariantEnvoy {
		return wire.FlavourEnvoy
	}
	return wire.FlavourGRPC
}

// Resources are one proxy's resources by type, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Secrets are a sidecar's own certificate and trusted roots (SDS);
	// nil for sets that carry none.
	Secrets []*tlsv3.Secret
}

// ErrDangling is returned when a resource names one that is not there.
var ErrDangling = errors.New("dangling reference")

// ClusterName names the cluster of a service port and subset ("" for all
// endpoints).
func ClusterName(s *mesh.Service, p mesh.Port, subset string) string {
	return "outbound|" + strconv.Itoa(int(p.Number)) + "|" + subset + "|" + s.Host
}

// ListenerName is what a gRPC client asks for with target xds:///<name>.
func ListenerName(s *mesh.Service, p mesh.Port) string {
	return s.Host + ":" + strconv.Itoa(int(p.Number))
}

func (r *Resources) add(o *Resources) {
	r.Listeners = append(r.Listeners, o.Listeners...)
	r.Routes = append(r.Routes, o.Routes...)
	r.Clusters = append(r.Clusters, o.Clusters...)
	r.Endpoints = append(r.Endpoints, o.Endpoints...)
}

// Own returns what a proxy has beyond its flavour's shared set: for an
// Envoy sidecar, its inbound listener and clusters; nothing for proxyless
// gRPC. They are validated, with every reference they make.
func Own(sh *Shared, proxy Proxy) (*Resources, error) {
	switch proxy.Flavour {
	case wire.FlavourGRPC:
		// A gRPC server's Listeners (a client asks for none of them).
		lis, err := serverListeners(sh, sh.InboundPorts(proxy.Pod), proxy.MTLS(), decoded{})
		if err == nil {
			err = validateAll(lis)
		}
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		return &Resources{Listeners: lis}, nil
	case wire.FlavourEnvoy:
		r, reg := &Resources{}, decoded{}
		if err := addInbound(sh, sh.InboundPorts(proxy.Pod), r, reg); err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		if err := errors.Join(validateAll(r.Listeners), validateAll(r.Clusters), r.checkRefs(sh.envoyNames, reg)); err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("proxy %s: unknown flavour %q", proxy.ID, proxy.Flavour)
}

func sortedBy[T any](xs []T, name func(T) string) []T {
	slices.SortStableFunc(xs, func(a, b T) int { return strings.Compare(name(a), name(b)) })
	return xs
}
