package translate

import (
	"fmt"
	"strings"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// Unhonoured names, by field path, the fields of a TrafficPolicy that are
// set and that proxies of a flavour are sent but do not act on (or, for
// Random, get in a form they accept): what docs/traffic.md lists per
// flavour. Sidecars honour every field weft translates.
func Unhonoured(spec *meshv1.TrafficPolicySpec, flavour wire.Flavour) []string {
	if flavour != wire.FlavourGRPC {
		return nil
	}
	var out []string
	add := func(set bool, field string) {
		if set {
			out = append(out, field)
		}
	}
	if t := spec.Timeouts; t != nil {
		add(t.Connect != nil, "spec.timeouts.connect")
		add(t.Idle != nil, "spec.timeouts.idle")
	}
	retries := func(prefix string, r *meshv1.RetryPolicy) {
		if r != nil {
			add(r.PerTryTimeout != nil, prefix+".perTryTimeout")
			add(r.Budget != nil, prefix+".budget")
			add(!retriesGRPCCodes(r), prefix+".retryOn (no gRPC status code among them: grpc-go retries nothing)")
		}
	}
	retries("spec.retries", spec.Retries)
	if cp := spec.ConnectionPool; cp != nil {
		add(cp.MaxConnections != nil, "spec.connectionPool.maxConnections")
		add(cp.MaxPendingRequests != nil, "spec.connectionPool.maxPendingRequests")
		add(cp.MaxRetries != nil, "spec.connectionPool.maxRetries")
		add(cp.MaxRequestsPerConnection != nil, "spec.connectionPool.maxRequestsPerConnection")
	}
	if od := spec.OutlierDetection; od != nil {
		add(od.Consecutive5xxErrors != nil, "spec.outlierDetection.consecutive5xxErrors")
		add(od.ConsecutiveGatewayErrors != nil, "spec.outlierDetection.consecutiveGatewayErrors")
	}
	if lb := spec.LoadBalancer; lb != nil {
		add(lb.Algorithm == meshv1.LoadBalancerRandom, "spec.loadBalancer.algorithm (Random: round robin instead)")
		if rh := lb.RingHash; rh != nil {
			add(rh.Cookie != nil, "spec.loadBalancer.ringHash.cookie")
			add(rh.SourceIP, "spec.loadBalancer.ringHash.sourceIP")
		}
	}
	for i, rt := range spec.HTTP {
		retries(fmt.Sprintf("spec.http[%d].retries", i), rt.Retries)
		add(rt.Mirror != nil, fmt.Sprintf("spec.http[%d].mirror", i))
	}
	add(spec.RateLimit != nil, "spec.rateLimit")
	add(spec.Tracing != nil, "spec.tracing.samplingPercent (grpc-go takes no sampling from xDS: its OpenTelemetry SDK samples as the environment the injector gave it says, mesh-wide)")
	if l := spec.Locality; l != nil && l.Mode != meshv1.LocalityNone {
		add(true, "spec.locality.minHealthyPercent (grpc-go moves to the next locality only when none of the nearer endpoints can be reached)")
	}
	return out
}

// retriesGRPCCodes says whether retries that are on send grpc-go a
// condition it retries: a gRPC status code in what retryOn makes of them
// on a gRPC port. Off retries ask nothing of it.
func retriesGRPCCodes(r *meshv1.RetryPolicy) bool {
	if r.Attempts != nil && *r.Attempts == 0 {
		return true
	}
	for c := range strings.SplitSeq(retryOn(r.RetryOn, mesh.Port{Protocol: meshv1.ProtocolGRPC}), ",") {
		if grpcStatusConditions[meshv1.RetryCondition(c)] {
			return true
		}
	}
	return false
}
