package inject

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/internal/wire"
)

// The drain wait (wire.DrainPath). A sidecar's pod: the kubelet runs each
// app container's pre-stop, an HTTP GET of DrainPath on the proxy's health
// port, before it stops the container; the proxy forwards it to the
// controller's drain endpoint over TLS with its own mesh certificate
// (SDS, on its authenticated stream) and names its pod in
// wire.DrainNodeHeader. The answer comes once every proxy that could send
// the pod new requests has acknowledged configuration in which it takes
// none (bounded by the pod's grace period), and the container is stopped
// then. The sidecar, a native sidecar, stops after the app containers.
// A proxyless pod has no proxy to forward anything: its containers are
// told the endpoint's URL (wire.EnvDrainURL) and call it themselves when
// they are told to stop (docs/injection.md).

const clusterDrain = "weft-drain"

// drainRoute sends the kubelet's pre-stop to the controller, naming the
// pod (the kubelet expands the node id's variables in the proxy's
// arguments). The wait has no timeout of its own: the controller bounds
// it by the pod's grace period, and the kubelet stops the container at
// the end of that period anyway.
func drainRoute() *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: wire.DrainPath}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterDrain},
			Timeout:          durationpb.New(0),
		}},
		RequestHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: wire.DrainNodeHeader, Value: nodeID()},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
	}
}

// drainCluster reaches the controller's drain endpoint over TLS, checked
// against the mesh roots, with the sidecar's own certificate from SDS.
func drainCluster(cfg Config) (*clusterv3.Cluster, error) {
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	tlsCtx, err := anypb.New(&tlsv3.UpstreamTlsContext{
		Sni: cfg.XDSHost,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: wire.SDSCertificate, SdsConfig: ads}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: wire.RootsFile}},
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                 clusterDrain,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: clusterDrain,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(cfg.XDSHost, cfg.DrainPort)}},
			}}}},
		},
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}},
	}, nil
}

// addPreStops gives every app container without a pre-stop of its own the
// wait on the proxy's health port. A container's own pre-stop is kept: it
// may call the same path itself (docs/injection.md).
func addPreStops(pod *corev1.Pod) {
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			continue
		}
		if c.Lifecycle == nil {
			c.Lifecycle = &corev1.Lifecycle{}
		}
		c.Lifecycle.PreStop = &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: wire.DrainPath, Port: intstr.FromInt32(wire.PortHealth), Scheme: corev1.URISchemeHTTP,
		}}
	}
}

// drainURL is the controller's drain endpoint, for proxyless workloads.
func drainURL(cfg Config) string {
	return fmt.Sprintf("https://%s:%d%s", cfg.XDSHost, cfg.DrainPort, wire.DrainPath)
}
