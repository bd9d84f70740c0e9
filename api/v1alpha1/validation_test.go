package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
	}
	os.Exit(code)
}

func meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "default"}
}

func validMeshService() *meshv1.MeshService {
	return &meshv1.MeshService{
		ObjectMeta: meta("reviews"),
		Spec: meshv1.MeshServiceSpec{
			ServiceName: "reviews",
			Ports:       []meshv1.MeshServicePort{{Port: 9080, Name: "http", Protocol: meshv1.ProtocolHTTP}},
			Subsets: []meshv1.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
			},
			Allow: []meshv1.AllowRule{{
				From:    []meshv1.Source{{Namespace: "shop", ServiceAccount: "productpage"}},
				Paths:   []meshv1.PathMatch{{Type: meshv1.MatchPrefix, Value: "/reviews"}},
				Methods: []meshv1.HTTPMethod{"GET"},
			}},
		},
	}
}

func dur(s string) *meshv1.Duration { d := meshv1.Duration(s); return &d }

func validTrafficPolicy() *meshv1.TrafficPolicy {
	return &meshv1.TrafficPolicy{
		ObjectMeta: meta("reviews"),
		Spec: meshv1.TrafficPolicySpec{
			TargetRef: meshv1.TargetRef{Name: "reviews"},
			HTTP: []meshv1.HTTPRoute{{
				Name:     "canary",
				Matches:  []meshv1.HTTPMatch{{Path: &meshv1.PathMatch{Type: meshv1.MatchPrefix, Value: "/"}}},
				Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}},
			}},
			Timeouts: &meshv1.Timeouts{Request: dur("10s")},
			Retries:  &meshv1.RetryPolicy{Attempts: ptr.To[int32](3), RetryOn: []meshv1.RetryCondition{"5xx"}},
			Tracing:  &meshv1.Tracing{SamplingPercent: "0.0125"},
		},
	}
}

func validPeerAuthentication() *meshv1.PeerAuthentication {
	return &meshv1.PeerAuthentication{
		ObjectMeta: meta("strict"),
		Spec:       meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict},
	}
}

type invalidCase struct {
	name string
	obj  client.Object
	// want are substrings the API server's message must contain: the
	// offending field's path and what is wrong.
	want []string
}

func ms(mut func(*meshv1.MeshService)) client.Object {
	o := validMeshService()
	mut(o)
	return o
}

func tp(mut func(*meshv1.TrafficPolicy)) client.Object {
	o := validTrafficPolicy()
	mut(o)
	return o
}

func pa(mut func(*meshv1.PeerAuthentication)) client.Object {
	o := validPeerAuthentication()
	mut(o)
	return o
}

func route(p *meshv1.TrafficPolicy) *meshv1.HTTPRoute { return &p.Spec.HTTP[0] }

func invalidCases() []invalidCase {
	return []invalidCase{
		// MeshService
		{"ms: no serviceName", ms(func(o *meshv1.MeshService) { o.Spec.ServiceName = "" }), []string{"spec.serviceName"}},
		{"ms: serviceName not a DNS label", ms(func(o *meshv1.MeshService) { o.Spec.ServiceName = "Reviews_1" }), []string{"spec.serviceName", "should match"}},
		{"ms: serviceName too long", ms(func(o *meshv1.MeshService) { o.Spec.ServiceName = strings.Repeat("a", 64) }), []string{"spec.serviceName", "may not be more than 63"}},
		{"ms: no ports", ms(func(o *meshv1.MeshService) { o.Spec.Ports = nil }), []string{"spec.ports", "Required"}},
		{"ms: port 0", ms(func(o *meshv1.MeshService) { o.Spec.Ports[0].Port = 0 }), []string{"spec.ports[0].port", "greater than or equal to 1"}},
		{"ms: port 70000", ms(func(o *meshv1.MeshService) { o.Spec.Ports[0].Port = 70000 }), []string{"spec.ports[0].port", "less than or equal to 65535"}},
		{"ms: unknown protocol", ms(func(o *meshv1.MeshService) { o.Spec.Ports[0].Protocol = "udp" }), []string{"spec.ports[0].protocol", "Unsupported value"}},
		{"ms: duplicate port", ms(func(o *meshv1.MeshService) { o.Spec.Ports = append(o.Spec.Ports, o.Spec.Ports[0]) }), []string{"spec.ports[1]", "Duplicate value"}},
		{"ms: duplicate port name", ms(func(o *meshv1.MeshService) {
			o.Spec.Ports = append(o.Spec.Ports, meshv1.MeshServicePort{Port: 9090, Name: "http"})
		}), []string{"spec.ports", "port names must be unique"}},
		{"ms: too many ports", ms(func(o *meshv1.MeshService) {
			o.Spec.Ports = nil
			for i := range 65 {
				o.Spec.Ports = append(o.Spec.Ports, meshv1.MeshServicePort{Port: int32(1000 + i)})
			}
		}), []string{"spec.ports", "must have at most 64 items"}},
		{"ms: duplicate subset", ms(func(o *meshv1.MeshService) { o.Spec.Subsets[1].Name = "v1" }), []string{"spec.subsets[1]", "Duplicate value"}},
		{"ms: subset without labels", ms(func(o *meshv1.MeshService) { o.Spec.Subsets[0].Labels = map[string]string{} }), []string{"spec.subsets[0].labels", "at least 1"}},
		{"ms: subset label value too long", ms(func(o *meshv1.MeshService) {
			o.Spec.Subsets[0].Labels = map[string]string{"version": strings.Repeat("x", 64)}
		}), []string{"spec.subsets[0].labels", "values at most 63"}},
		{"ms: subset name uppercase", ms(func(o *meshv1.MeshService) { o.Spec.Subsets[0].Name = "V1" }), []string{"spec.subsets[0].name", "should match"}},
		{"ms: allow rule without from", ms(func(o *meshv1.MeshService) { o.Spec.Allow[0].From = nil }), []string{"spec.allow[0].from", "Required"}},
		{"ms: source with identity and namespace", ms(func(o *meshv1.MeshService) {
			o.Spec.Allow[0].From[0].Identity = "spiffe://cluster.local/ns/shop/sa/web"
		}), []string{"spec.allow[0].from[0]", "set exactly one of identity or namespace"}},
		{"ms: source with neither", ms(func(o *meshv1.MeshService) { o.Spec.Allow[0].From[0] = meshv1.Source{} }), []string{"spec.allow[0].from[0]", "set exactly one of identity or namespace"}},
		{"ms: serviceAccount without namespace", ms(func(o *meshv1.MeshService) {
			o.Spec.Allow[0].From[0] = meshv1.Source{Identity: "spiffe://cluster.local/ns/a/sa/b", ServiceAccount: "b"}
		}), []string{"spec.allow[0].from[0].serviceAccount", "requires namespace"}},
		{"ms: serviceAccount narrowing every namespace", ms(func(o *meshv1.MeshService) {
			o.Spec.Allow[0].From[0] = meshv1.Source{Namespace: "*", ServiceAccount: "checkout"}
		}), []string{"spec.allow[0].from[0].serviceAccount", `cannot narrow namespace "*"`}},
		{"ms: identity not a SPIFFE ID", ms(func(o *meshv1.MeshService) {
			o.Spec.Allow[0].From[0] = meshv1.Source{Identity: "https://example.com/x"}
		}), []string{"spec.allow[0].from[0].identity", "should match"}},
		{"ms: allow port not in ports", ms(func(o *meshv1.MeshService) { o.Spec.Allow[0].Ports = []int32{8080} }), []string{"spec.allow", "allow[].ports: every port must be one of spec.ports"}},
		{"ms: path rule on tcp-only service", ms(func(o *meshv1.MeshService) { o.Spec.Ports[0].Protocol = meshv1.ProtocolTCP }), []string{"spec.allow", "a rule with paths or methods needs at least one http"}},
		{"ms: path without slash", ms(func(o *meshv1.MeshService) { o.Spec.Allow[0].Paths[0].Value = "reviews" }), []string{"spec.allow[0].paths[0]", "a path must start with '/'"}},
		{"ms: path too long", ms(func(o *meshv1.MeshService) { o.Spec.Allow[0].Paths[0].Value = "/" + strings.Repeat("a", 1024) }), []string{"spec.allow[0].paths[0].value", "may not be more than 1024"}},
		{"ms: unknown method", ms(func(o *meshv1.MeshService) { o.Spec.Allow[0].Methods = []meshv1.HTTPMethod{"FETCH"} }), []string{"spec.allow[0].methods[0]", "Unsupported value"}},

		// TrafficPolicy
		{"tp: no target name", tp(func(o *meshv1.TrafficPolicy) { o.Spec.TargetRef.Name = "" }), []string{"spec.targetRef.name"}},
		{"tp: target kind unknown", tp(func(o *meshv1.TrafficPolicy) { o.Spec.TargetRef.Kind = "Service" }), []string{"spec.targetRef.kind", "Unsupported value"}},
		{"tp: target port 0", tp(func(o *meshv1.TrafficPolicy) { o.Spec.TargetRef.Port = ptr.To[int32](0) }), []string{"spec.targetRef.port"}},
		{"tp: empty spec", tp(func(o *meshv1.TrafficPolicy) { o.Spec = meshv1.TrafficPolicySpec{TargetRef: o.Spec.TargetRef} }), []string{"spec", "must set at least one of http"}},
		{"tp: sampling over 100", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Tracing.SamplingPercent = "100.5" }), []string{"spec.tracing.samplingPercent", "tracing.samplingPercent: a percentage, at most 100"}},
		{"tp: sampling with a sign", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Tracing.SamplingPercent = "-1" }), []string{"spec.tracing.samplingPercent", "should match"}},
		{"tp: sampling with five decimals", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Tracing.SamplingPercent = "0.00001" }), []string{"spec.tracing.samplingPercent"}},
		{"tp: sampling not set", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Tracing.SamplingPercent = "" }), []string{"spec.tracing.samplingPercent"}},
		{"tp: weights add up to 90", tp(func(o *meshv1.TrafficPolicy) { route(o).Backends[0].Weight = 80 }), []string{"spec.http[0].backends", "weights of a route's backends must add up to 100"}},
		{"tp: weight over 100", tp(func(o *meshv1.TrafficPolicy) { route(o).Backends[0].Weight = 101 }), []string{"spec.http[0].backends[0].weight", "less than or equal to 100"}},
		{"tp: negative weight", tp(func(o *meshv1.TrafficPolicy) { route(o).Backends[1].Weight = -10 }), []string{"spec.http[0].backends[1].weight", "greater than or equal to 0"}},
		{"tp: no backends", tp(func(o *meshv1.TrafficPolicy) { route(o).Backends = nil }), []string{"spec.http[0].backends", "Required"}},
		{"tp: same subset twice", tp(func(o *meshv1.TrafficPolicy) { route(o).Backends[1].Subset = "v1" }), []string{"spec.http[0].backends", "each subset may appear only once"}},
		{"tp: duplicate route names", tp(func(o *meshv1.TrafficPolicy) { o.Spec.HTTP = append(o.Spec.HTTP, o.Spec.HTTP[0]) }), []string{"spec.http", "route names must be unique"}},
		{"tp: empty match", tp(func(o *meshv1.TrafficPolicy) { route(o).Matches = []meshv1.HTTPMatch{{}} }), []string{"spec.http[0].matches[0]", "set at least one of path, headers or method"}},
		{"tp: unknown path match type", tp(func(o *meshv1.TrafficPolicy) { route(o).Matches[0].Path.Type = "Glob" }), []string{"spec.http[0].matches[0].path.type", "Unsupported value"}},
		{"tp: regex too long", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Matches[0].Path = &meshv1.PathMatch{Type: meshv1.MatchRegularExpression, Value: strings.Repeat("a", 1025)}
		}), []string{"spec.http[0].matches[0].path.value", "may not be more than 1024"}},
		{"tp: header Present with value", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Matches[0].Headers = []meshv1.HeaderMatch{{Name: "x-canary", Type: meshv1.HeaderMatchPresent, Value: ptr.To("yes")}}
		}), []string{"spec.http[0].matches[0].headers[0]", "value: required unless type is Present"}},
		{"tp: header Exact without value", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Matches[0].Headers = []meshv1.HeaderMatch{{Name: "x-canary"}}
		}), []string{"spec.http[0].matches[0].headers[0]", "value: required unless type is Present"}},
		{"tp: header name with space", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Matches[0].Headers = []meshv1.HeaderMatch{{Name: "x canary", Value: ptr.To("1")}}
		}), []string{"spec.http[0].matches[0].headers[0].name", "should match"}},
		{"tp: malformed duration", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Timeouts.Request = dur("10 seconds") }), []string{"spec.timeouts.request", "should match"}},
		{"tp: request timeout over 1h", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Timeouts.Request = dur("2h") }), []string{"spec.timeouts.request", "at most 1h"}},
		{"tp: connect timeout 0", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Timeouts.Connect = dur("0s") }), []string{"spec.timeouts.connect", "between 1ms and 5m"}},
		{"tp: route timeout over 1h", tp(func(o *meshv1.TrafficPolicy) { route(o).Timeout = dur("90m") }), []string{"spec.http[0].timeout", "at most 1h"}},
		{"tp: 11 retry attempts", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Retries.Attempts = ptr.To[int32](11) }), []string{"spec.retries.attempts", "less than or equal to 10"}},
		{"tp: unknown retry condition", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Retries.RetryOn = []meshv1.RetryCondition{"sometimes"} }), []string{"spec.retries.retryOn[0]", "Unsupported value"}},
		{"tp: backoff max below base", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.Retries.Backoff = &meshv1.Backoff{BaseInterval: "1s", MaxInterval: dur("100ms")}
		}), []string{"spec.retries.backoff.maxInterval", "must not be shorter than backoff.baseInterval"}},
		{"tp: retry budget over 100 percent", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.Retries.Budget = &meshv1.RetryBudget{Percent: ptr.To[meshv1.Percentage](150)}
		}), []string{"spec.retries.budget.percent", "less than or equal to 100"}},
		{"tp: empty connection pool", tp(func(o *meshv1.TrafficPolicy) { o.Spec.ConnectionPool = &meshv1.ConnectionPool{} }), []string{"spec.connectionPool", "at least 1"}},
		{"tp: maxConnections 0", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.ConnectionPool = &meshv1.ConnectionPool{MaxConnections: ptr.To[int32](0)}
		}), []string{"spec.connectionPool.maxConnections", "greater than or equal to 1"}},
		{"tp: outlier detection with no trigger", tp(func(o *meshv1.TrafficPolicy) { o.Spec.OutlierDetection = &meshv1.OutlierDetection{Interval: dur("5s")} }), []string{"spec.outlierDetection", "set at least one of consecutive5xxErrors"}},
		{"tp: ejection percent 101", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.OutlierDetection = &meshv1.OutlierDetection{Consecutive5xxErrors: ptr.To[int32](5), MaxEjectionPercent: ptr.To[meshv1.Percentage](101)}
		}), []string{"spec.outlierDetection.maxEjectionPercent", "less than or equal to 100"}},
		{"tp: outlier interval too short", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.OutlierDetection = &meshv1.OutlierDetection{Consecutive5xxErrors: ptr.To[int32](5), Interval: dur("10ms")}
		}), []string{"spec.outlierDetection.interval", "between 100ms and 1h"}},
		{"tp: empty fault", tp(func(o *meshv1.TrafficPolicy) { route(o).Fault = &meshv1.FaultInjection{} }), []string{"spec.http[0].fault", "set delay, abort or both"}},
		{"tp: fault percentage 120", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Fault = &meshv1.FaultInjection{Delay: &meshv1.FaultDelay{FixedDelay: "1s", Percentage: 120}}
		}), []string{"spec.http[0].fault.delay.percentage", "less than or equal to 100"}},
		{"tp: abort with both statuses", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Fault = &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{HTTPStatus: ptr.To[int32](503), GRPCStatus: ptr.To[int32](14), Percentage: 5}}
		}), []string{"spec.http[0].fault.abort", "set exactly one of httpStatus or grpcStatus"}},
		{"tp: abort http status 700", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Fault = &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{HTTPStatus: ptr.To[int32](700), Percentage: 5}}
		}), []string{"spec.http[0].fault.abort.httpStatus", "less than or equal to 599"}},
		{"tp: mirror percentage 101", tp(func(o *meshv1.TrafficPolicy) {
			route(o).Mirror = &meshv1.Mirror{Name: "shadow", Percentage: ptr.To[meshv1.Percentage](101)}
		}), []string{"spec.http[0].mirror.percentage", "less than or equal to 100"}},
		{"tp: ring hash without key", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.LoadBalancer = &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRingHash}
		}), []string{"spec.loadBalancer.ringHash", "required when algorithm is RingHash"}},
		{"tp: ring hash with two keys", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.LoadBalancer = &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{Header: "x-user", SourceIP: true}}
		}), []string{"spec.loadBalancer.ringHash", "set exactly one of header, cookie or sourceIP"}},
		{"tp: unknown algorithm", tp(func(o *meshv1.TrafficPolicy) { o.Spec.LoadBalancer = &meshv1.LoadBalancer{Algorithm: "Fastest"} }), []string{"spec.loadBalancer.algorithm", "Unsupported value"}},
		{"tp: unknown locality mode", tp(func(o *meshv1.TrafficPolicy) { o.Spec.Locality = &meshv1.LocalityPolicy{Mode: "Nearest"} }), []string{"spec.locality.mode", "Unsupported value"}},
		{"tp: rate limit zero requests", tp(func(o *meshv1.TrafficPolicy) { o.Spec.RateLimit = &meshv1.LocalRateLimit{Requests: 0, Interval: "1s"} }), []string{"spec.rateLimit.requests", "greater than or equal to 1"}},
		{"tp: rate limit burst below requests", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.RateLimit = &meshv1.LocalRateLimit{Requests: 100, Interval: "1s", Burst: ptr.To[int32](10)}
		}), []string{"spec.rateLimit.burst", "must be at least rateLimit.requests"}},
		{"tp: rate limit interval too short", tp(func(o *meshv1.TrafficPolicy) {
			o.Spec.RateLimit = &meshv1.LocalRateLimit{Requests: 10, Interval: "1ms"}
		}), []string{"spec.rateLimit.interval", "between 50ms and 1h"}},

		// PeerAuthentication
		{"pa: unknown mode", pa(func(o *meshv1.PeerAuthentication) { o.Spec.Mode = "OPTIONAL" }), []string{"spec.mode", "Unsupported value"}},
		{"pa: nothing set", pa(func(o *meshv1.PeerAuthentication) { o.Spec = meshv1.PeerAuthenticationSpec{} }), []string{"spec", "set mode, portLevel or both"}},
		{"pa: portLevel without selector", pa(func(o *meshv1.PeerAuthentication) {
			o.Spec.PortLevel = []meshv1.PortMTLS{{Port: 8080, Mode: meshv1.MTLSDisable}}
		}), []string{"spec.portLevel", "needs a selector"}},
		{"pa: empty selector", pa(func(o *meshv1.PeerAuthentication) { o.Spec.Selector = &meshv1.WorkloadSelector{} }), []string{"spec.selector", "must not be empty"}},
		{"pa: port 0", pa(func(o *meshv1.PeerAuthentication) {
			o.Spec.Selector = &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}
			o.Spec.PortLevel = []meshv1.PortMTLS{{Port: 0, Mode: meshv1.MTLSDisable}}
		}), []string{"spec.portLevel[0].port", "greater than or equal to 1"}},
		{"pa: port-level mode unknown", pa(func(o *meshv1.PeerAuthentication) {
			o.Spec.Selector = &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}
			o.Spec.PortLevel = []meshv1.PortMTLS{{Port: 5432, Mode: "OFF"}}
		}), []string{"spec.portLevel[0].mode", "Unsupported value"}},
		{"pa: duplicate port", pa(func(o *meshv1.PeerAuthentication) {
			o.Spec.Selector = &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}
			o.Spec.PortLevel = []meshv1.PortMTLS{{Port: 5432, Mode: meshv1.MTLSDisable}, {Port: 5432, Mode: meshv1.MTLSStrict}}
		}), []string{"spec.portLevel[1]", "Duplicate value"}},
	}
}

// TestAdmissionRejectsInvalid creates each invalid object (as a server-side
// dry run, so nothing is stored) and checks that the real API server
// refuses it with a message naming the field.
func TestAdmissionRejectsInvalid(t *testing.T) {
	cases := invalidCases()
	if len(cases) < 40 {
		t.Fatalf("only %d invalid cases; the API promises at least 40", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), tc.obj, client.DryRunAll)
			if err == nil {
				t.Fatalf("the API server accepted an invalid object")
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message does not contain %q:\n%s", w, err)
				}
			}
		})
	}
}

// TestValidObjectsAccepted guards the fixtures above: each invalid case is
// invalid because of its one mutation, not because the base is.
func TestValidObjectsAccepted(t *testing.T) {
	for _, o := range []client.Object{validMeshService(), validTrafficPolicy(), validPeerAuthentication()} {
		if err := env.Client.Create(context.Background(), o, client.DryRunAll); err != nil {
			t.Errorf("%T: %v", o, err)
		}
	}
}

// TestDefaults checks that the schema, not a webhook, fills defaults.
func TestDefaults(t *testing.T) {
	ctx := context.Background()
	o := validTrafficPolicy()
	o.Name = "defaults"
	o.Spec.Retries = &meshv1.RetryPolicy{Budget: &meshv1.RetryBudget{}}
	o.Spec.OutlierDetection = &meshv1.OutlierDetection{Consecutive5xxErrors: ptr.To[int32](5)}
	o.Spec.Locality = &meshv1.LocalityPolicy{}
	route(o).Mirror = &meshv1.Mirror{Name: "shadow"}
	o.Spec.LoadBalancer = &meshv1.LoadBalancer{}
	o.Spec.RateLimit = &meshv1.LocalRateLimit{Requests: 5}
	route(o).Matches[0].Path.Type = ""
	if err := env.Client.Create(ctx, o, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if got := o.Spec.TargetRef.Kind; got != "MeshService" {
		t.Errorf("targetRef.kind defaulted to %q", got)
	}
	if got := o.Spec.LoadBalancer.Algorithm; got != meshv1.LoadBalancerRoundRobin {
		t.Errorf("loadBalancer.algorithm defaulted to %q", got)
	}
	if got := o.Spec.Retries.Attempts; got == nil || *got != 2 {
		t.Errorf("retries.attempts defaulted to %v", got)
	}
	if b := o.Spec.Retries.Budget; b.Percent == nil || *b.Percent != 20 || b.MinConcurrency == nil || *b.MinConcurrency != 3 {
		t.Errorf("retries.budget defaulted to %+v", b)
	}
	if got := o.Spec.OutlierDetection.MaxEjectionPercent; got == nil || *got != 10 {
		t.Errorf("outlierDetection.maxEjectionPercent defaulted to %v", got)
	}
	if l := o.Spec.Locality; l.Mode != meshv1.LocalityPreferZone || l.MinHealthyPercent == nil || *l.MinHealthyPercent != 70 {
		t.Errorf("locality defaulted to %+v", l)
	}
	if got := route(o).Mirror.Percentage; got == nil || *got != 100 {
		t.Errorf("mirror.percentage defaulted to %v", got)
	}
	if got := o.Spec.RateLimit.Interval; got != "1s" {
		t.Errorf("rateLimit.interval defaulted to %q", got)
	}
	if got := route(o).Matches[0].Path.Type; got != meshv1.MatchPrefix {
		t.Errorf("path type defaulted to %q", got)
	}

	m := validMeshService()
	m.Name = "defaults"
	m.Spec.Ports[0].Protocol = ""
	m.Spec.Allow = nil
	if err := env.Client.Create(ctx, m, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if got := m.Spec.Ports[0].Protocol; got != meshv1.ProtocolTCP {
		t.Errorf("protocol defaulted to %q", got)
	}
}

// TestServiceNameImmutable checks the transition rule on spec.serviceName.
func TestServiceNameImmutable(t *testing.T) {
	ctx := context.Background()
	m := validMeshService()
	m.Name = "immutable"
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, m) })
	m.Spec.ServiceName = "other"
	err := env.Client.Update(ctx, m)
	if err == nil || !strings.Contains(err.Error(), "spec.serviceName") || !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("want serviceName is immutable, got %v", err)
	}
}
