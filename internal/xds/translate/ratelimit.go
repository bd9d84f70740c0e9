package translate

// This file translates local rate limiting: a token bucket in the HTTP
// connection manager of each sidecar's inbound chain for a port whose
// policy sets spec.rateLimit, so that every serving proxy lets in at most
// its share. grpc-go has no rate limit filter (a server listener carrying
// one would be refused), so proxyless servers are sent none.

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// rateLimitFor is the rate limit of the policy in force on a pod port's
// service port, or nil.
func (sh *Shared) rateLimitFor(pp PodPort) *meshv1.LocalRateLimit {
	s := sh.model.Services[pp.Owner]
	if s == nil {
		return nil
	}
	if pol := s.PolicyFor(pp.Service.Number); pol != nil {
		return pol.Spec.RateLimit
	}
	return nil
}

// rateLimitFilter is the token bucket for rl: requests tokens every
// interval (1 s by default) into a bucket of burst (requests by default);
// a request finding it empty is answered 429.
func rateLimitFilter(statPrefix string, rl *meshv1.LocalRateLimit, reg decoded) (*hcmv3.HttpFilter, error) {
	interval := durationpb.New(time.Second)
	if rl.Interval != "" {
		d, err := duration("rateLimit.interval", rl.Interval)
		if err != nil {
			return nil, err
		}
		interval = d
	}
	burst := rl.Requests
	if rl.Burst != nil {
		burst = *rl.Burst
	}
	all := &corev3.RuntimeFractionalPercent{DefaultValue: percent(100)}
	cfg, err := reg.pack(&localratelimitv3.LocalRateLimit{
		StatPrefix: statPrefix + "_ratelimit",
		TokenBucket: &typev3.TokenBucket{MaxTokens: uint32(burst), TokensPerFill: wrapperspb.UInt32(uint32(rl.Requests)),
			FillInterval: interval},
		// Without these the filter counts nothing and enforces nothing.
		FilterEnabled:  all,
		FilterEnforced: all,
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.local_ratelimit", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}
