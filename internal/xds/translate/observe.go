package translate

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/mesh"
)

// Observability is what sidecars report beyond their stats: access logs
// and traces. The zero value reports neither.
type Observability struct {
	// AccessLogFormat turns on access logs to the proxy's stdout: "json"
	// for one JSON object per request or connection (JSONAccessLogFields),
	// or an Envoy format string ("%START_TIME% %REQ(:PATH)% ...").
	AccessLogFormat string
	// TracingEndpoint is an OpenTelemetry collector's OTLP/gRPC address,
	// host:port; empty turns tracing off. TracingSampling is the percentage
	// of requests sampled (0-100).
	TracingEndpoint string
	TracingSampling float64
}

// TracingCluster reaches the collector.
const TracingCluster = "weft-tracing"

// JSONAccessLogFields are the fields of a JSON access log line.
var JSONAccessLogFields = map[string]string{
	"start_time":     "%START_TIME%",
	"method":         "%REQ(:METHOD)%",
	"path":           "%REQ(:PATH)%",
	"protocol":       "%PROTOCOL%",
	"response_code":  "%RESPONSE_CODE%",
	"grpc_status":    "%GRPC_STATUS_NUMBER%",
	"response_flags": "%RESPONSE_FLAGS%",
	"bytes_received": "%BYTES_RECEIVED%",
	"bytes_sent":     "%BYTES_SENT%",
	"duration_ms":    "%DURATION%",
	"upstream_host":  "%UPSTREAM_HOST%",
	"upstream":       "%UPSTREAM_CLUSTER%",
	"downstream":     "%DOWNSTREAM_REMOTE_ADDRESS%",
	"peer_identity":  "%DOWNSTREAM_PEER_URI_SAN%",
	"request_id":     "%REQ(X-REQUEST-ID)%",
}

// Validate checks the options, naming the flag of the one that is wrong:
// a value a sidecar would refuse is refused here, before any is sent.
func (o Observability) Validate() error {
	if o.TracingEndpoint != "" {
		host, port, err := net.SplitHostPort(o.TracingEndpoint)
		if err != nil || host == "" {
			return fmt.Errorf("--tracing-endpoint %q: want host:port", o.TracingEndpoint)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("--tracing-endpoint %q: bad port", o.TracingEndpoint)
		}
	}
	if o.TracingSampling < 0 || o.TracingSampling > 100 {
		return fmt.Errorf("--tracing-sampling %v: want a percentage, 0-100", o.TracingSampling)
	}
	if o.AccessLogFormat != "" && o.AccessLogFormat != "json" {
		if strings.ContainsAny(o.AccessLogFormat, "\n") {
			return fmt.Errorf("--access-log-format: one line, please: weft ends each entry with a newline")
		}
		if err := CheckAccessLogFormat(o.AccessLogFormat); err != nil {
			return fmt.Errorf("--access-log-format %q: %w", o.AccessLogFormat, err)
		}
	}
	return nil
}

// accessLogs are the access loggers of a filter, or nil.
func (o Observability) accessLogs() []*accesslogv3.AccessLog {
	if o.AccessLogFormat == "" {
		return nil
	}
	f := &filelogv3.FileAccessLog{Path: "/dev/stdout"}
	if o.AccessLogFormat == "json" {
		fields := map[string]*structpb.Value{}
		for k, v := range JSONAccessLogFields {
			fields[k] = structpb.NewStringValue(v)
		}
		f.AccessLogFormat = &filelogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: fields}}}}
	} else {
		f.AccessLogFormat = &filelogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: o.AccessLogFormat + "\n"}}}}}
	}
	return []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(f)}}}
}

// observe adds access logs and tracing to an HTTP connection manager.
func (o Observability) observe(m *hcmv3.HttpConnectionManager, service string) {
	m.AccessLog = o.accessLogs()
	if o.TracingEndpoint == "" {
		return
	}
	otel := mustAny(&tracev3.OpenTelemetryConfig{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: TracingCluster}}},
		ServiceName: service,
	})
	m.Tracing = &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: o.TracingSampling},
		Provider:       &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: otel}},
	}
}

// routeTracing is the trace sampling a policy sets on its routes, when
// tracing is on; nil otherwise (the connection manager's mesh-wide
// sampling applies). The override is exact: spec.tracing.samplingPercent
// has at most four decimals, a whole number per million.
func (o Observability) routeTracing(pol *mesh.Policy) (*routev3.Tracing, error) {
	if o.TracingEndpoint == "" || pol == nil || pol.Spec.Tracing == nil {
		return nil, nil
	}
	n, err := perMillion(pol.Spec.Tracing.SamplingPercent)
	if err != nil {
		return nil, fmt.Errorf("spec.tracing.samplingPercent: %w", err)
	}
	return &routev3.Tracing{RandomSampling: &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_MILLION}}, nil
}

// perMillion reads a percentage written as a decimal with at most four
// decimals ("0.5", "100") as parts per million.
func perMillion(percent string) (uint32, error) {
	whole, frac, dot := strings.Cut(percent, ".")
	if whole == "" || len(whole) > 3 || (dot && frac == "") || len(frac) > 4 || strings.Trim(whole+frac, "0123456789") != "" {
		return 0, fmt.Errorf("%q: want a percentage with at most four decimals", percent)
	}
	w, _ := strconv.Atoi(whole) // digits only, at most three
	f, _ := strconv.Atoi(frac + strings.Repeat("0", 4-len(frac)))
	n := w*10000 + f
	if n > 1000000 {
		return 0, fmt.Errorf("%q: at most 100", percent)
	}
	return uint32(n), nil
}

// tracingCluster reaches the collector over HTTP/2 (OTLP/gRPC), by DNS.
func (o Observability) tracingCluster() *clusterv3.Cluster {
	if o.TracingEndpoint == "" {
		return nil
	}
	host, portStr, _ := net.SplitHostPort(o.TracingEndpoint)
	port, _ := strconv.Atoi(portStr)
	return &clusterv3.Cluster{
		Name:                 TracingCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: TracingCluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(host, int32(port))}}}},
		}}},
		// The collector speaks OTLP over gRPC: HTTP/2, as to gRPC ports.
		TypedExtensionProtocolOptions: http2Options,
	}
}
