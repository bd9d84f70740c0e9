package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	grpccredv3 "github.com/envoyproxy/go-control-plane/envoy/config/grpc_credential/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/wire"
)

// Paths served on the proxy's health port.
const (
	healthReadyPath = "/healthz/ready"
	statsPath       = "/stats/prometheus"
)

const (
	clusterXDS   = "weft-xds"
	clusterAdmin = "weft-admin"
	fileCreds    = "envoy.grpc_credentials.file_based_metadata"
)

// Bootstrap builds the proxy's Envoy bootstrap: admin on loopback, ADS to
// the controller over TLS with the mesh root and the projected token as
// call credentials (the delta protocol, which weft serves with the least
// state per proxy), a health listener (readiness once Envoy has its
// config, and the pod's rewritten HTTP probes), and a Prometheus stats
// listener whose stats carry the mesh's labels (statsConfig). Node id and
// cluster come from the command line, which the kubelet fills from the
// downward API.
func Bootstrap(cfg Config, w Workload, probes []probeRoute) (*bootstrapv3.Bootstrap, error) {
	creds, err := anypb.New(&grpccredv3.FileBasedMetadataConfig{
		SecretData:   &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: wire.TokenFile}},
		HeaderPrefix: wire.BearerPrefix,
	})
	if err != nil {
		return nil, err
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	healthRoutes := []*routev3.Route{
		prefixRewrite(healthReadyPath, clusterAdmin, "/ready"),
	}
	clusters := []*clusterv3.Cluster{staticCluster(clusterAdmin, wire.PortAdmin)}
	seen := map[int32]bool{}
	for _, p := range probes {
		name := fmt.Sprintf("weft-probe-%d", p.port)
		healthRoutes = append(healthRoutes, prefixRewrite(p.path, name, p.target))
		if !seen[p.port] {
			seen[p.port] = true
			clusters = append(clusters, staticCluster(name, p.port))
		}
	}
	if cfg.DrainPort != 0 {
		drain, err := drainCluster(cfg)
		if err != nil {
			return nil, err
		}
		healthRoutes, clusters = append(healthRoutes, drainRoute()), append(clusters, drain)
	}
	health, err := httpListener("weft-health", wire.PortHealth, healthRoutes)
	if err != nil {
		return nil, err
	}
	stats, err := httpListener("weft-stats", wire.PortStats, []*routev3.Route{prefixRewrite(statsPath, clusterAdmin, statsPath)})
	if err != nil {
		return nil, err
	}

	b := &bootstrapv3.Bootstrap{
		// The id comes from --service-node; the metadata tells weft's xDS
		// server what kind of proxy this is and the delivery its pod was
		// set up for (a sidecar takes its certificates over SDS either
		// way; the delivery travels with it all the same).
		Node: &corev3.Node{Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			wire.MetaFlavour:      structpb.NewStringValue(string(wire.FlavourEnvoy)),
			wire.MetaCertDelivery: structpb.NewStringValue(string(cfg.CertDelivery)),
		}}},
		Admin: &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", wire.PortAdmin)},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
						TargetUri:  fmt.Sprintf("%s:%d", cfg.XDSHost, cfg.XDSPort),
						StatPrefix: clusterXDS,
						ChannelCredentials: &corev3.GrpcService_GoogleGrpc_ChannelCredentials{
							CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials{
								SslCredentials: &corev3.GrpcService_GoogleGrpc_SslCredentials{
									RootCerts: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: wire.RootsFile}},
								},
							},
						},
						CallCredentials: []*corev3.GrpcService_GoogleGrpc_CallCredentials{{
							CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_CallCredentials_FromPlugin{
								FromPlugin: &corev3.GrpcService_GoogleGrpc_CallCredentials_MetadataCredentialsFromPlugin{
									Name:       fileCreds,
									ConfigType: &corev3.GrpcService_GoogleGrpc_CallCredentials_MetadataCredentialsFromPlugin_TypedConfig{TypedConfig: creds},
								},
							},
						}},
						CredentialsFactoryName: fileCreds,
					}},
				}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{health, stats},
			Clusters:  clusters,
		},
		StatsConfig:    statsConfig(cfg, w),
		LayeredRuntime: regexRuntime(),
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("the Envoy bootstrap is invalid: %w", err)
	}
	return b, nil
}

// Regular expressions' program size: Envoy refuses a route, header or
// RBAC regex whose RE2 program is larger than the runtime key
// re2.max_program_size.error_level, 100 by default, a size that a short
// regex exceeds ("[a-z]{200}") and that weft cannot compute (it checks
// regexes with Go's RE2 syntax, whose program is not RE2's). A policy weft
// accepts must not be refused by the sidecar: the error level is as high
// as Envoy reads it (it truncates the value to 32 bits), and the bounds
// on the specs' regex lengths keep what may be sent small. Envoy logs the
// regexes past the warn level and counts them in re2.exceeded_warn_level.
const (
	regexErrorLevel = 4294967295
	regexWarnLevel  = 1000
)

// regexRuntime is the bootstrap's runtime: a static layer with the regex
// program size levels.
func regexRuntime() *bootstrapv3.LayeredRuntime {
	return &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{{
		Name: "weft",
		LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: &structpb.Struct{Fields: map[string]*structpb.Value{
			"re2.max_program_size.error_level": structpb.NewNumberValue(regexErrorLevel),
			"re2.max_program_size.warn_level":  structpb.NewNumberValue(regexWarnLevel),
		}}},
	}}}
}

// Workload is what a pod says about itself in its labels: the service and
// version its telemetry is labelled with (wire.WorkloadService,
// wire.WorkloadVersion); either may be empty.
type Workload struct {
	Service string
	Version string
}

// WorkloadOf reads a pod's labels.
func WorkloadOf(labels map[string]string) Workload {
	return Workload{Service: wire.WorkloadService(labels), Version: wire.WorkloadVersion(labels)}
}

// statsConfig tags every stat with the pod's namespace, identity, and the
// service and version its labels give (left out when they give none), and
// takes the destination of outbound clusters out of their names; Envoy's
// own default tags stay. The namespace and service account are the
// downward API's, which the kubelet expands in the proxy's arguments.
func statsConfig(cfg Config, w Workload) *metricsv3.StatsConfig {
	fixed := func(name, value string) *metricsv3.TagSpecifier {
		return &metricsv3.TagSpecifier{TagName: name, TagValue: &metricsv3.TagSpecifier_FixedValue{FixedValue: value}}
	}
	tags := []*metricsv3.TagSpecifier{
		fixed(wire.StatTagNamespace, podNamespaceVar),
		fixed(wire.StatTagIdentity, podIdentity(cfg)),
	}
	if w.Service != "" {
		tags = append(tags, fixed(wire.StatTagService, w.Service))
	}
	if w.Version != "" {
		tags = append(tags, fixed(wire.StatTagVersion, w.Version))
	}
	for _, t := range wire.DestinationStatTags() {
		tags = append(tags, &metricsv3.TagSpecifier{TagName: t.Name, TagValue: &metricsv3.TagSpecifier_Regex{Regex: t.Regex}})
	}
	return &metricsv3.StatsConfig{StatsTags: tags, UseAllDefaultTags: wrapperspb.Bool(true)}
}

// RenderBootstrap renders the bootstrap as compact JSON, which Envoy takes
// through --config-yaml.
func RenderBootstrap(cfg Config, w Workload, probes []probeRoute) (string, error) {
	b, err := Bootstrap(cfg, w, probes)
	if err != nil {
		return "", err
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return "", fmt.Errorf("rendering the Envoy bootstrap: %w", err)
	}
	// protojson varies its whitespace from run to run on purpose; the pod
	// spec must not, or a second pass would change it.
	var compact bytes.Buffer
	if err := json.Compact(&compact, out); err != nil {
		return "", fmt.Errorf("compacting the Envoy bootstrap: %w", err)
	}
	return compact.String(), nil
}

func socketAddress(host string, port int32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// staticCluster reaches a port on the pod's loopback.
func staticCluster(name string, port int32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress("127.0.0.1", port)}},
			}}}},
		},
	}
}

// prefixRewrite matches one exact path and forwards it to cluster as
// target.
func prefixRewrite(path, cluster, target string) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			PrefixRewrite:    target,
			Timeout:          durationpb.New(10 * time.Second),
		}},
	}
}

// httpListener serves routes on all addresses of the pod at port.
func httpListener(name string, port int32, routes []*routev3.Route) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name:         name,
			VirtualHosts: []*routev3.VirtualHost{{Name: name, Domains: []string{"*"}, Routes: routes}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: socketAddress("0.0.0.0", port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}, nil
}
