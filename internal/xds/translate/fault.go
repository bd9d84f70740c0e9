package translate

// This file translates fault injection: the HTTP fault filter ahead of the
// router in a port's client-side HTTP connection manager (the proxyless
// api listener and the sidecar's outbound chain), empty there, and each
// route's delay and abort as the filter's per-route configuration. grpc-go
// and Envoy both read it on the caller's side.

import (
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// faultFilterName names the fault filter and keys its per-route
// configuration.
const faultFilterName = "envoy.filters.http.fault"

// faultFilter injects nothing of its own: only routes with a fault do.
var faultFilter = &hcmv3.HttpFilter{Name: faultFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&faultv3.HTTPFault{})}}

// hasFault says whether the policy in force on a port injects faults on
// any route.
func hasFault(s *mesh.Service, p mesh.Port) bool {
	pol := s.PolicyFor(p.Number)
	if pol == nil {
		return false
	}
	for _, rt := range pol.Spec.HTTP {
		if rt.Fault != nil {
			return true
		}
	}
	return false
}

// clientFilters are a client-side HTTP connection manager's filters: the
// fault filter when the port injects faults, then the router.
func clientFilters(fault bool) []*hcmv3.HttpFilter {
	if fault {
		return []*hcmv3.HttpFilter{faultFilter, routerHTTPFilter}
	}
	return []*hcmv3.HttpFilter{routerHTTPFilter}
}

// routeFault is a route's fault as the filter's per-route configuration.
func routeFault(f *meshv1.FaultInjection) (map[string]*anypb.Any, error) {
	if f == nil {
		return nil, nil
	}
	hf := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		fixed, err := duration("fault.delay.fixedDelay", d.FixedDelay)
		if err != nil {
			return nil, err
		}
		hf.Delay = &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: fixed}, Percentage: percent(d.Percentage)}
	}
	if a := f.Abort; a != nil {
		hf.Abort = &faultv3.FaultAbort{Percentage: percent(a.Percentage)}
		switch {
		case a.GRPCStatus != nil:
			hf.Abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(*a.GRPCStatus)}
		case a.HTTPStatus != nil:
			hf.Abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(*a.HTTPStatus)}
		}
	}
	cfg, err := anypb.New(hf)
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{faultFilterName: cfg}, nil
}

func percent(p meshv1.Percentage) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(p), Denominator: typev3.FractionalPercent_HUNDRED}
}
