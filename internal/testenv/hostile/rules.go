package hostile

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

func kinds() []*Kind {
	return []*Kind{
		{Name: "MeshService", Valid: func() client.Object { return ValidMeshService() }, Rules: meshServiceRules()},
		{Name: "TrafficPolicy", Valid: func() client.Object { return ValidTrafficPolicy() }, Rules: trafficPolicyRules()},
		{Name: "PeerAuthentication", Valid: func() client.Object { return ValidPeerAuthentication() }, Rules: peerAuthRules()},
	}
}

// ValidMeshService sets every field of a MeshService: reviews, with an
// http, a grpc and a tcp port, two subsets and an allow rule.
func ValidMeshService() *meshv1.MeshService {
	return &meshv1.MeshService{Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews",
		Ports: []meshv1.MeshServicePort{
			{Port: 9080, Name: "http", Protocol: meshv1.ProtocolHTTP},
			{Port: 9081, Name: "grpc", Protocol: meshv1.ProtocolGRPC},
			{Port: 9082, Name: "tcp", Protocol: meshv1.ProtocolTCP},
		},
		Subsets: []meshv1.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2", "example.com/track": "stable"}},
		},
		Allow: []meshv1.AllowRule{{
			From: []meshv1.Source{
				{Namespace: "shop", ServiceAccount: "productpage"},
				{Identity: "spiffe://cluster.local/ns/shop/sa/web"},
			},
			Ports:   []int32{9080},
			Paths:   []meshv1.PathMatch{{Type: meshv1.MatchPrefix, Value: "/reviews"}},
			Methods: []meshv1.HTTPMethod{"GET", "POST"},
		}},
	}}
}

func dur(s string) *meshv1.Duration { d := meshv1.Duration(s); return &d }

func pct(p int32) *meshv1.Percentage { v := meshv1.Percentage(p); return &v }

// ValidTrafficPolicy sets every field of a TrafficPolicy (a ring hash by
// cookie, so not by header or source IP), targeting port 9080 of reviews.
func ValidTrafficPolicy() *meshv1.TrafficPolicy {
	retries := func() *meshv1.RetryPolicy {
		return &meshv1.RetryPolicy{Attempts: ptr.To[int32](3), PerTryTimeout: dur("2s"), RetryOn: []meshv1.RetryCondition{"5xx", "reset"},
			Backoff: &meshv1.Backoff{BaseInterval: "25ms", MaxInterval: dur("250ms")},
			Budget:  &meshv1.RetryBudget{Percent: pct(20), MinConcurrency: ptr.To[int32](3)}}
	}
	return &meshv1.TrafficPolicy{Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Kind: "MeshService", Name: "reviews", Port: ptr.To[int32](9080)},
		HTTP: []meshv1.HTTPRoute{{
			Name: "canary",
			Matches: []meshv1.HTTPMatch{{
				Path:    &meshv1.PathMatch{Type: meshv1.MatchPrefix, Value: "/"},
				Headers: []meshv1.HeaderMatch{{Name: "x-canary", Type: meshv1.HeaderMatchExact, Value: ptr.To("yes"), Invert: true}},
				Method:  ptr.To[meshv1.HTTPMethod]("GET"),
			}},
			Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}},
			Timeout:  dur("10s"),
			Retries:  retries(),
			Fault: &meshv1.FaultInjection{
				Delay: &meshv1.FaultDelay{FixedDelay: "1s", Percentage: 5},
				Abort: &meshv1.FaultAbort{HTTPStatus: ptr.To[int32](503), Percentage: 1},
			},
			Mirror: &meshv1.Mirror{Name: "shadow", Subset: "v1", Percentage: pct(10)},
		}},
		Timeouts: &meshv1.Timeouts{Request: dur("10s"), Connect: dur("1s"), Idle: dur("1h")},
		Retries:  retries(),
		ConnectionPool: &meshv1.ConnectionPool{MaxConnections: ptr.To[int32](100), MaxPendingRequests: ptr.To[int32](100),
			MaxRequests: ptr.To[int32](100), MaxRetries: ptr.To[int32](3), MaxRequestsPerConnection: ptr.To[int32](1000)},
		OutlierDetection: &meshv1.OutlierDetection{Consecutive5xxErrors: ptr.To[int32](5), ConsecutiveGatewayErrors: ptr.To[int32](5),
			FailurePercentage: pct(50), Interval: dur("10s"), BaseEjectionTime: dur("30s"), MaxEjectionPercent: pct(10),
			MinimumHosts: ptr.To[int32](5), MinimumRequests: ptr.To[int32](50)},
		LoadBalancer: &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{
			Cookie: &meshv1.HashCookie{Name: "session", TTL: dur("1h")}, MinimumRingSize: ptr.To[int32](1024)}},
		Locality:  &meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone, MinHealthyPercent: pct(70)},
		RateLimit: &meshv1.LocalRateLimit{Requests: 100, Interval: "1s", Burst: ptr.To[int32](200)},
		Tracing:   &meshv1.Tracing{SamplingPercent: "1.5"},
	}}
}

// ValidPeerAuthentication sets every field of a PeerAuthentication.
func ValidPeerAuthentication() *meshv1.PeerAuthentication {
	return &meshv1.PeerAuthentication{Spec: meshv1.PeerAuthenticationSpec{
		Selector: &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"},
			MatchExpressions: []meshv1.SelectorRequirement{{Key: "version", Operator: "In", Values: []string{"v1", "v2"}}}},
		Mode:      meshv1.MTLSStrict,
		PortLevel: []meshv1.PortMTLS{{Port: 8080, Mode: meshv1.MTLSPermissive}},
	}}
}

// BadRegex is a regular expression of at most 1024 characters (the
// schema's bound) that RE2 refuses: unbalanced, with a repeat over 1000,
// Perl syntax RE2 lacks (back references, look-around, possessive
// repeats), a reversed range, or random text that happens not to parse.
func BadRegex(r *rand.Rand) string {
	w := func() string { return strings.Repeat(string(rune('a'+r.IntN(26))), 1+r.IntN(5)) }
	for {
		var s string
		switch r.IntN(10) {
		case 0:
			s = "/" + w() + "/(" + w()
		case 1:
			s = "[" + w()
		case 2:
			s = w() + "{" + strconv.Itoa(1001+r.IntN(100000)) + "}"
		case 3:
			s = "(?:" + w() + "{" + strconv.Itoa(10+r.IntN(90)) + "}){" + strconv.Itoa(10+r.IntN(90)) + "}{" + strconv.Itoa(10+r.IntN(90)) + "}"
		case 4:
			s = "(" + w() + ")\\" + strconv.Itoa(1+r.IntN(9))
		case 5:
			s = []string{"(?=", "(?!", "(?<=", "(?<!"}[r.IntN(4)] + w() + ")" + w()
		case 6:
			s = w() + []string{"++", "*+", "?+", "**"}[r.IntN(4)]
		case 7:
			s = "[" + string(rune('m'+r.IntN(13))) + "-" + string(rune('a'+r.IntN(12))) + "]"
		case 8:
			s = strings.Repeat("(", 1+r.IntN(500)) + w()
		default:
			var b strings.Builder
			for range 1 + r.IntN(30) {
				b.WriteString(`()[]{}*+?|\^$.a1`[r.IntN(16):][:1])
			}
			s = b.String()
		}
		if _, err := regexp.Compile(s); err != nil && len(s) <= 1024 {
			return s
		}
	}
}

// duration is a Duration the pattern admits, n of unit.
func duration(n int, unit string) meshv1.Duration { return meshv1.Duration(strconv.Itoa(n) + unit) }

func meshServiceRules() []Rule {
	ms := func(o client.Object) *meshv1.MeshService { return o.(*meshv1.MeshService) }
	return []Rule{
		{What: "an allow rule with paths on tcp ports only", Apply: func(_ *rand.Rand, o client.Object) string {
			for i := range ms(o).Spec.Ports {
				ms(o).Spec.Ports[i].Protocol = meshv1.ProtocolTCP
			}
			return "spec.allow"
		}},
		{What: "allow[].ports naming a port the service lacks", Apply: func(r *rand.Rand, o client.Object) string {
			ms(o).Spec.Allow[0].Ports = []int32{int32(10000 + r.IntN(50000))}
			return "spec.allow"
		}},
		{What: "two ports of one name", Apply: func(r *rand.Rand, o client.Object) string {
			p := ms(o).Spec.Ports
			p[1+r.IntN(2)].Name = p[0].Name
			return "spec.ports"
		}},
		{What: "a source with identity and namespace", Apply: func(_ *rand.Rand, o client.Object) string {
			ms(o).Spec.Allow[0].From[0].Identity = "spiffe://cluster.local/ns/shop/sa/web"
			return "spec.allow[0].from[0]"
		}},
		{What: "a source with neither identity nor namespace", Apply: func(_ *rand.Rand, o client.Object) string {
			ms(o).Spec.Allow[0].From[1] = meshv1.Source{}
			return "spec.allow[0].from[1]"
		}},
		{What: "serviceAccount without namespace", Apply: func(r *rand.Rand, o client.Object) string {
			ms(o).Spec.Allow[0].From[1].ServiceAccount = "sa" + strconv.Itoa(r.IntN(1000))
			return "spec.allow[0].from[1].serviceAccount"
		}},
		{What: "serviceAccount narrowing namespace *", Apply: func(_ *rand.Rand, o client.Object) string {
			ms(o).Spec.Allow[0].From[0].Namespace = "*"
			return "spec.allow[0].from[0].serviceAccount"
		}},
		{What: "a path prefix without a leading /", Apply: func(r *rand.Rand, o client.Object) string {
			p := &ms(o).Spec.Allow[0].Paths[0]
			p.Type = []meshv1.MatchType{meshv1.MatchExact, meshv1.MatchPrefix}[r.IntN(2)]
			p.Value = strings.TrimLeft(BadRegex(r), "/") + "x"
			return "spec.allow[0].paths[0]"
		}},
		{What: "a subset label key over 317 characters or value over 63", Apply: func(r *rand.Rand, o client.Object) string {
			i := r.IntN(2)
			if r.IntN(2) == 0 {
				ms(o).Spec.Subsets[i].Labels["k"+strings.Repeat("x", 317+r.IntN(2000))] = "v"
			} else {
				ms(o).Spec.Subsets[i].Labels["version"] = strings.Repeat("y", 64+r.IntN(2000))
			}
			return fmt.Sprintf("spec.subsets[%d].labels", i)
		}},
		{What: "an allow path's regular expression that does not compile", Judged: true, Apply: func(r *rand.Rand, o client.Object) string {
			// A Service of its own, so that no older MeshService claims
			// the same one: the regular expression alone is at fault.
			ms(o).Spec.ServiceName = "svc-" + strconv.Itoa(r.IntN(1e9))
			ms(o).Spec.Allow[0].Paths[0] = meshv1.PathMatch{Type: meshv1.MatchRegularExpression, Value: BadRegex(r)}
			return "spec.allow[0].paths[0].value"
		}},
	}
}

func trafficPolicyRules() []Rule {
	tp := func(o client.Object) *meshv1.TrafficPolicy { return o.(*meshv1.TrafficPolicy) }
	route := func(o client.Object) *meshv1.HTTPRoute { return &tp(o).Spec.HTTP[0] }
	// tooLong are durations past each field's CEL bound, with the field.
	tooLong := []struct {
		field string
		set   func(*meshv1.TrafficPolicy, meshv1.Duration)
		bad   func(*rand.Rand) meshv1.Duration
	}{
		{"spec.timeouts.request", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.Timeouts.Request = &d },
			func(r *rand.Rand) meshv1.Duration { return duration(61+r.IntN(99999), "m") }},
		{"spec.timeouts.connect", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.Timeouts.Connect = &d },
			func(r *rand.Rand) meshv1.Duration {
				return []meshv1.Duration{"0s", "0ms", duration(301+r.IntN(99999), "s")}[r.IntN(3)]
			}},
		{"spec.timeouts.idle", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.Timeouts.Idle = &d },
			func(r *rand.Rand) meshv1.Duration { return duration(25+r.IntN(99999), "h") }},
		{"spec.http[0].timeout", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.HTTP[0].Timeout = &d },
			func(r *rand.Rand) meshv1.Duration { return duration(3601+r.IntN(99999), "s") }},
		{"spec.retries.perTryTimeout", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.Retries.PerTryTimeout = &d },
			func(r *rand.Rand) meshv1.Duration {
				return []meshv1.Duration{"0ms", duration(2+r.IntN(9999), "h")}[r.IntN(2)]
			}},
		{"spec.retries.backoff.baseInterval", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.Retries.Backoff.BaseInterval = d },
			func(r *rand.Rand) meshv1.Duration { return duration(61+r.IntN(99999), "s") }},
		{"spec.outlierDetection.interval", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.OutlierDetection.Interval = &d },
			func(r *rand.Rand) meshv1.Duration { return duration(r.IntN(100), "ms") }},
		{"spec.outlierDetection.baseEjectionTime", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.OutlierDetection.BaseEjectionTime = &d },
			func(r *rand.Rand) meshv1.Duration { return duration(r.IntN(1000), "ms") }},
		{"spec.http[0].fault.delay.fixedDelay", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.HTTP[0].Fault.Delay.FixedDelay = d },
			func(r *rand.Rand) meshv1.Duration { return duration(61+r.IntN(99999), "m") }},
		{"spec.rateLimit.interval", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.RateLimit.Interval = d },
			func(r *rand.Rand) meshv1.Duration { return duration(r.IntN(50), "ms") }},
		{"spec.loadBalancer.ringHash.cookie.ttl", func(p *meshv1.TrafficPolicy, d meshv1.Duration) { p.Spec.LoadBalancer.RingHash.Cookie.TTL = &d },
			func(r *rand.Rand) meshv1.Duration { return duration(8761+r.IntN(90000), "h") }},
	}
	return []Rule{
		{What: "backend weights that do not add up to 100", Apply: func(r *rand.Rand, o client.Object) string {
			b := route(o).Backends
			for b[0].Weight+b[1].Weight == 100 {
				b[0].Weight, b[1].Weight = int32(r.IntN(101)), int32(r.IntN(101))
			}
			return "spec.http[0].backends"
		}},
		{What: "one subset twice in a route", Apply: func(_ *rand.Rand, o client.Object) string {
			route(o).Backends[1].Subset = route(o).Backends[0].Subset
			return "spec.http[0].backends"
		}},
		{What: "two routes of one name", Apply: func(_ *rand.Rand, o client.Object) string {
			tp(o).Spec.HTTP = append(tp(o).Spec.HTTP, *route(o).DeepCopy())
			return "spec.http"
		}},
		{What: "an empty match", Apply: func(_ *rand.Rand, o client.Object) string {
			route(o).Matches[0] = meshv1.HTTPMatch{}
			return "spec.http[0].matches[0]"
		}},
		{What: "a header match Present with a value, or Exact without", Apply: func(r *rand.Rand, o client.Object) string {
			h := &route(o).Matches[0].Headers[0]
			if r.IntN(2) == 0 {
				h.Type = meshv1.HeaderMatchPresent
			} else {
				h.Value = nil
			}
			return "spec.http[0].matches[0].headers[0]"
		}},
		{What: "a path prefix without a leading /", Apply: func(r *rand.Rand, o client.Object) string {
			route(o).Matches[0].Path.Value = strings.TrimLeft(BadRegex(r), "/") + "x"
			return "spec.http[0].matches[0].path"
		}},
		{What: "a duration past its field's bound", Apply: func(r *rand.Rand, o client.Object) string {
			d := tooLong[r.IntN(len(tooLong))]
			d.set(tp(o), d.bad(r))
			return d.field
		}},
		{What: "a backoff whose maximum is below its base", Apply: func(r *rand.Rand, o client.Object) string {
			b := tp(o).Spec.Retries.Backoff
			b.BaseInterval = duration(2+r.IntN(58), "s")
			b.MaxInterval = dur(string(duration(1+r.IntN(1000), "ms")))
			return "spec.retries.backoff.maxInterval"
		}},
		{What: "outlier detection with no trigger", Apply: func(_ *rand.Rand, o client.Object) string {
			od := tp(o).Spec.OutlierDetection
			od.Consecutive5xxErrors, od.ConsecutiveGatewayErrors, od.FailurePercentage = nil, nil, nil
			return "spec.outlierDetection"
		}},
		{What: "a fault with neither delay nor abort", Apply: func(_ *rand.Rand, o client.Object) string {
			route(o).Fault = &meshv1.FaultInjection{}
			return "spec.http[0].fault"
		}},
		{What: "an abort with both statuses, or neither", Apply: func(r *rand.Rand, o client.Object) string {
			a := route(o).Fault.Abort
			if r.IntN(2) == 0 {
				a.GRPCStatus = ptr.To(int32(1 + r.IntN(16)))
			} else {
				a.HTTPStatus = nil
			}
			return "spec.http[0].fault.abort"
		}},
		{What: "RingHash without ringHash, or ringHash with another algorithm", Apply: func(r *rand.Rand, o client.Object) string {
			lb := tp(o).Spec.LoadBalancer
			if r.IntN(2) == 0 {
				lb.RingHash = nil
			} else {
				lb.Algorithm = []meshv1.LoadBalancerAlgorithm{meshv1.LoadBalancerRoundRobin, meshv1.LoadBalancerRandom, meshv1.LoadBalancerLeastRequest}[r.IntN(3)]
			}
			return "spec.loadBalancer.ringHash"
		}},
		{What: "a ring hash on two keys", Apply: func(r *rand.Rand, o client.Object) string {
			rh := tp(o).Spec.LoadBalancer.RingHash
			if r.IntN(2) == 0 {
				rh.Header = "x-user"
			} else {
				rh.SourceIP = true
			}
			return "spec.loadBalancer.ringHash"
		}},
		{What: "a rate limit burst below its requests", Apply: func(r *rand.Rand, o client.Object) string {
			rl := tp(o).Spec.RateLimit
			rl.Requests = int32(2 + r.IntN(100000))
			rl.Burst = ptr.To(int32(1 + r.IntN(int(rl.Requests)-1)))
			return "spec.rateLimit.burst"
		}},
		{What: "a policy that sets nothing", Apply: func(_ *rand.Rand, o client.Object) string {
			tp(o).Spec = meshv1.TrafficPolicySpec{TargetRef: tp(o).Spec.TargetRef}
			return "spec"
		}},
		{What: "a sampling percentage over 100", Apply: func(r *rand.Rand, o client.Object) string {
			tp(o).Spec.Tracing.SamplingPercent = strconv.Itoa(101+r.IntN(899)) + []string{"", ".5", ".0001"}[r.IntN(3)]
			return "spec.tracing.samplingPercent"
		}},
		{What: "a path regular expression that does not compile", Judged: true, Apply: func(r *rand.Rand, o client.Object) string {
			route(o).Matches[0].Path = &meshv1.PathMatch{Type: meshv1.MatchRegularExpression, Value: BadRegex(r)}
			return "spec.http[0].matches[0].path.value"
		}},
		{What: "a header regular expression that does not compile", Judged: true, Apply: func(r *rand.Rand, o client.Object) string {
			route(o).Matches[0].Headers[0] = meshv1.HeaderMatch{Name: "x-user", Type: meshv1.HeaderMatchRegularExpression, Value: ptr.To(BadRegex(r))}
			return "spec.http[0].matches[0].headers[0].value"
		}},
	}
}

func peerAuthRules() []Rule {
	pa := func(o client.Object) *meshv1.PeerAuthentication { return o.(*meshv1.PeerAuthentication) }
	return []Rule{
		{What: "a policy that sets nothing", Apply: func(_ *rand.Rand, o client.Object) string {
			pa(o).Spec = meshv1.PeerAuthenticationSpec{}
			return "spec"
		}},
		{What: "portLevel without a selector", Apply: func(_ *rand.Rand, o client.Object) string {
			pa(o).Spec.Selector = nil
			return "spec.portLevel"
		}},
		{What: "an empty selector", Apply: func(_ *rand.Rand, o client.Object) string {
			pa(o).Spec.Selector.MatchLabels, pa(o).Spec.Selector.MatchExpressions = nil, nil
			return "spec.selector"
		}},
		{What: "Exists or DoesNotExist with values, or In or NotIn without", Apply: func(r *rand.Rand, o client.Object) string {
			e := &pa(o).Spec.Selector.MatchExpressions[0]
			if r.IntN(2) == 0 {
				e.Operator = []meshv1.SelectorOperator{"Exists", "DoesNotExist"}[r.IntN(2)]
			} else {
				e.Operator, e.Values = []meshv1.SelectorOperator{"In", "NotIn"}[r.IntN(2)], nil
			}
			return "spec.selector.matchExpressions[0].values"
		}},
		{What: "a matchLabels key or value that is not a label's", Judged: true, Apply: func(r *rand.Rand, o client.Object) string {
			if r.IntN(2) == 0 {
				pa(o).Spec.Selector.MatchLabels["-"+strconv.Itoa(r.IntN(1000))+"/x"] = "v"
			} else {
				pa(o).Spec.Selector.MatchLabels["app"] = "bad value " + strconv.Itoa(r.IntN(1000))
			}
			return "spec.selector"
		}},
		{What: "a label key whose prefix is not a DNS subdomain", Judged: true, Apply: func(r *rand.Rand, o client.Object) string {
			// The schema's pattern admits dots anywhere inside the prefix,
			// and only the controller's parser checks it is a DNS
			// subdomain (no empty label, at most 253 characters).
			w := strings.Repeat("x", 1+r.IntN(20))
			key := []string{w + "..example.com/app", w + ".-a.com/app", strings.Repeat("a", 254+r.IntN(50)) + "/app"}[r.IntN(3)]
			pa(o).Spec.Selector.MatchExpressions[0] = meshv1.SelectorRequirement{Key: key, Operator: "Exists"}
			return "spec.selector"
		}},
	}
}
