package translate

// This file translates a TrafficPolicy's failure handling and load
// balancing: timeouts and retries onto routes, connection limits, outlier
// detection and the balancing algorithm onto clusters. Each function is
// pure, from the policy in force on a port to fields of one resource.
// What each proxy flavour honours is in docs/traffic.md.

import (
	"fmt"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// Defaults the API documents.
const (
	defaultRetryAttempts = 2
	defaultRetryOn       = "connect-failure,refused-stream,unavailable"
)

// duration reads an API duration (admission checked its form).
func duration(field string, d meshv1.Duration) (*durationpb.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return durationpb.New(v), nil
}

// routeResilience sets a route's timeout, retries and hash policy from the
// policy in force on its port; rt, when set, is the route's own entry in
// spec.http, whose timeout and retries win over the policy's.
func routeResilience(a *routev3.RouteAction, pol *mesh.Policy, rt *meshv1.HTTPRoute, p mesh.Port) error {
	var timeout *meshv1.Duration
	var retries *meshv1.RetryPolicy
	if pol != nil {
		if t := pol.Spec.Timeouts; t != nil {
			timeout = t.Request
		}
		retries = pol.Spec.Retries
	}
	if rt != nil {
		if rt.Timeout != nil {
			timeout = rt.Timeout
		}
		if rt.Retries != nil {
			retries = rt.Retries
		}
	}
	switch {
	case timeout != nil:
		d, err := duration("timeouts.request", *timeout)
		if err != nil {
			return err
		}
		a.Timeout = d
		if d.AsDuration() > 0 {
			// What grpc-go reads as the call's deadline; Envoy bounds the
			// stream with it too.
			a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: d}
		}
	case p.Protocol == meshv1.ProtocolGRPC:
		// No timeout on gRPC ports unless asked: callers set deadlines
		// (Envoy's own default would cut every call at 15 s).
		a.Timeout = durationpb.New(0)
	}
	if pol != nil && pol.Spec.Timeouts != nil && pol.Spec.Timeouts.Idle != nil {
		d, err := duration("timeouts.idle", *pol.Spec.Timeouts.Idle)
		if err != nil {
			return err
		}
		a.IdleTimeout = d
	}
	rp, err := retryPolicy(retries, p)
	if err != nil {
		return err
	}
	a.RetryPolicy = rp
	if pol != nil {
		hp, err := hashPolicy(pol.Spec.LoadBalancer)
		if err != nil {
			return err
		}
		a.HashPolicy = hp
	}
	return nil
}

// retryPolicy is Envoy's retry policy for r, nil when retries are off.
func retryPolicy(r *meshv1.RetryPolicy, p mesh.Port) (*routev3.RetryPolicy, error) {
	if r == nil {
		return nil, nil
	}
	attempts := int32(defaultRetryAttempts)
	if r.Attempts != nil {
		attempts = *r.Attempts
	}
	if attempts == 0 {
		return nil, nil // off; grpc-go refuses num_retries 0
	}
	rp := &routev3.RetryPolicy{RetryOn: retryOn(r.RetryOn, p), NumRetries: wrapperspb.UInt32(uint32(attempts))}
	if r.PerTryTimeout != nil {
		d, err := duration("retries.perTryTimeout", *r.PerTryTimeout)
		if err != nil {
			return nil, err
		}
		rp.PerTryTimeout = d
	}
	if b := r.Backoff; b != nil {
		base, err := duration("retries.backoff.baseInterval", b.BaseInterval)
		if err != nil {
			return nil, err
		}
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: base}
		if b.MaxInterval != nil {
			if rp.RetryBackOff.MaxInterval, err = duration("retries.backoff.maxInterval", *b.MaxInterval); err != nil {
				return nil, err
			}
		}
	}
	return rp, nil
}

// grpcStatusConditions are the retry conditions that name gRPC status
// codes, which Envoy and grpc-go both read on gRPC traffic.
var grpcStatusConditions = map[meshv1.RetryCondition]bool{
	"cancelled": true, "deadline-exceeded": true, "internal": true, "resource-exhausted": true, "unavailable": true,
}

// retryOn maps the API's conditions onto the port's protocol: on gRPC
// ports an HTTP status condition becomes the gRPC codes it stands for (a
// gRPC failure travels as HTTP 200 with a grpc-status), on other ports the
// gRPC codes, which no response there carries, are dropped. Transport
// conditions (reset, connect-failure, refused-stream) hold on both.
func retryOn(conds []meshv1.RetryCondition, p mesh.Port) string {
	if len(conds) == 0 {
		if p.Protocol != meshv1.ProtocolGRPC {
			return "connect-failure,refused-stream,reset"
		}
		return defaultRetryOn
	}
	var out []string
	add := func(c string) {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	for _, c := range conds {
		switch {
		case p.Protocol == meshv1.ProtocolGRPC && c == "5xx":
			add("internal")
			add("unavailable")
		case p.Protocol == meshv1.ProtocolGRPC && c == "gateway-error":
			add("unavailable")
		case p.Protocol == meshv1.ProtocolGRPC && c == "retriable-4xx":
			// 409 has no gRPC counterpart.
		case p.Protocol != meshv1.ProtocolGRPC && grpcStatusConditions[c]:
		default:
			add(string(c))
		}
	}
	if len(out) == 0 {
		// Only conditions that cannot occur on this port: retry what can.
		return "connect-failure,refused-stream"
	}
	return strings.Join(out, ",")
}

// hashPolicy is what RingHash hashes, on every route of the port.
func hashPolicy(lb *meshv1.LoadBalancer) ([]*routev3.RouteAction_HashPolicy, error) {
	if lb == nil || lb.Algorithm != meshv1.LoadBalancerRingHash || lb.RingHash == nil {
		return nil, nil
	}
	rh := lb.RingHash
	switch {
	case rh.Header != "":
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(rh.Header)}}}}, nil
	case rh.Cookie != nil:
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: rh.Cookie.Name}
		if rh.Cookie.TTL != nil {
			ttl, err := duration("loadBalancer.ringHash.cookie.ttl", *rh.Cookie.TTL)
			if err != nil {
				return nil, err
			}
			c.Ttl = ttl
		}
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}}, nil
	case rh.SourceIP:
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}}, nil
	}
	return nil, nil
}

// clusterResilience sets a cluster's connect timeout, balancing,
// connection limits and outlier detection from the policy in force on its
// port.
func clusterResilience(c *clusterv3.Cluster, pol *mesh.Policy, p mesh.Port) error {
	if pol == nil {
		return nil
	}
	spec := &pol.Spec
	if t := spec.Timeouts; t != nil && t.Connect != nil {
		d, err := duration("timeouts.connect", *t.Connect)
		if err != nil {
			return err
		}
		c.ConnectTimeout = d
	}
	if lb := spec.LoadBalancer; lb != nil {
		switch lb.Algorithm {
		case meshv1.LoadBalancerLeastRequest:
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		case meshv1.LoadBalancerRandom:
			c.LbPolicy = clusterv3.Cluster_RANDOM
		case meshv1.LoadBalancerRingHash:
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			// xxHash is the one hash function grpc-go accepts.
			rh := &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH}
			if lb.RingHash != nil && lb.RingHash.MinimumRingSize != nil {
				rh.MinimumRingSize = wrapperspb.UInt64(uint64(*lb.RingHash.MinimumRingSize))
			}
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: rh}
		}
	}
	if th := thresholds(spec); th != nil {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
	if od := spec.OutlierDetection; od != nil {
		o, err := outlierDetection(od)
		if err != nil {
			return err
		}
		c.OutlierDetection = o
	}
	return httpOptions(c, spec, p)
}

// thresholds are the circuit breakers of the DEFAULT priority, or nil when
// the policy sets none.
func thresholds(spec *meshv1.TrafficPolicySpec) *clusterv3.CircuitBreakers_Thresholds {
	cp := spec.ConnectionPool
	var budget *meshv1.RetryBudget
	if spec.Retries != nil {
		budget = spec.Retries.Budget
	}
	if cp == nil && budget == nil {
		return nil
	}
	th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
	u32 := func(v *int32) *wrapperspb.UInt32Value {
		if v == nil {
			return nil
		}
		return wrapperspb.UInt32(uint32(*v))
	}
	if cp != nil {
		th.MaxConnections, th.MaxPendingRequests, th.MaxRequests, th.MaxRetries =
			u32(cp.MaxConnections), u32(cp.MaxPendingRequests), u32(cp.MaxRequests), u32(cp.MaxRetries)
	}
	if budget != nil {
		rb := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{MinRetryConcurrency: u32(budget.MinConcurrency)}
		if budget.Percent != nil {
			rb.BudgetPercent = &typev3.Percent{Value: float64(*budget.Percent)}
		}
		th.RetryBudget = rb
	}
	return th
}

// outlierDetection enables exactly the ejections the policy asks for:
// Envoy would otherwise eject after five 5xx in a row, and grpc-go by
// success rate, neither of which the API offers unasked.
func outlierDetection(od *meshv1.OutlierDetection) (*clusterv3.OutlierDetection, error) {
	off, on := wrapperspb.UInt32(0), wrapperspb.UInt32(100)
	o := &clusterv3.OutlierDetection{EnforcingConsecutive_5Xx: off, EnforcingSuccessRate: off,
		EnforcingConsecutiveGatewayFailure: off, EnforcingFailurePercentage: off}
	if od.Consecutive5xxErrors != nil {
		o.Consecutive_5Xx, o.EnforcingConsecutive_5Xx = wrapperspb.UInt32(uint32(*od.Consecutive5xxErrors)), on
	}
	if od.ConsecutiveGatewayErrors != nil {
		o.ConsecutiveGatewayFailure, o.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(uint32(*od.ConsecutiveGatewayErrors)), on
	}
	if od.FailurePercentage != nil {
		o.FailurePercentageThreshold, o.EnforcingFailurePercentage = wrapperspb.UInt32(uint32(*od.FailurePercentage)), on
		if od.MinimumHosts != nil {
			o.FailurePercentageMinimumHosts = wrapperspb.UInt32(uint32(*od.MinimumHosts))
		}
		if od.MinimumRequests != nil {
			o.FailurePercentageRequestVolume = wrapperspb.UInt32(uint32(*od.MinimumRequests))
		}
	}
	var err error
	if od.Interval != nil {
		if o.Interval, err = duration("outlierDetection.interval", *od.Interval); err != nil {
			return nil, err
		}
	}
	if od.BaseEjectionTime != nil {
		if o.BaseEjectionTime, err = duration("outlierDetection.baseEjectionTime", *od.BaseEjectionTime); err != nil {
			return nil, err
		}
	}
	if od.MaxEjectionPercent != nil {
		o.MaxEjectionPercent = wrapperspb.UInt32(uint32(*od.MaxEjectionPercent))
	}
	return o, nil
}

// httpOptions sets the upstream HTTP options a policy asks for (requests
// per connection, idle connections), beside the HTTP/2 choice of gRPC and
// http2 ports.
func httpOptions(c *clusterv3.Cluster, spec *meshv1.TrafficPolicySpec, p mesh.Port) error {
	var common *corev3.HttpProtocolOptions
	if cp := spec.ConnectionPool; cp != nil && cp.MaxRequestsPerConnection != nil {
		common = &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(uint32(*cp.MaxRequestsPerConnection))}
	}
	if t := spec.Timeouts; t != nil && t.Idle != nil {
		d, err := duration("timeouts.idle", *t.Idle)
		if err != nil {
			return err
		}
		if common == nil {
			common = &corev3.HttpProtocolOptions{}
		}
		common.IdleTimeout = d
	}
	if common == nil || !p.Protocol.IsHTTP() {
		return nil
	}
	upstream := explicitHTTP1
	if speaksHTTP2(p) {
		upstream = explicitHTTP2
	}
	a, err := anypb.New(&httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: common, UpstreamProtocolOptions: upstream})
	if err != nil {
		return fmt.Errorf("encoding the upstream HTTP options: %w", err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: a}
	return nil
}

// forProxyless adapts clusters to what grpc-go accepts: it refuses the
// Random algorithm (NACK), which becomes round robin there. Clusters that
// need nothing are shared, not copied.
func forProxyless(clusters []*clusterv3.Cluster) []*clusterv3.Cluster {
	out, copied := clusters, false
	for i, c := range clusters {
		if c.LbPolicy != clusterv3.Cluster_RANDOM {
			continue
		}
		if !copied {
			out, copied = slices.Clone(clusters), true
		}
		g := proto.Clone(c).(*clusterv3.Cluster)
		g.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		out[i] = g
	}
	return out
}
