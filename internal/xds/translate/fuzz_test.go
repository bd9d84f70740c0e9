package translate

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// FuzzTranslate feeds arbitrary TrafficPolicy and MeshService specs to the
// whole pipeline: the model never panics, and whatever its verdicts let
// into force translates, for both flavours and a caller's locality, into
// resources that pass Envoy's validation and name nothing missing. (A
// policy in force that failed translation would be a value sent to, or
// refused for, every proxy; the verdicts must refuse it first.)
func FuzzTranslate(f *testing.F) {
	f.Add([]byte(`{"targetRef":{"name":"reviews"},"http":[{"backends":[{"subset":"v1","weight":90},{"subset":"v2","weight":10}]}]}`), []byte(`{}`))
	f.Add([]byte(`{"targetRef":{"name":"reviews","port":9080},"retries":{"attempts":3,"retryOn":["unavailable"],"backoff":{"baseInterval":"10ms"}},`+
		`"timeouts":{"request":"1s"},"loadBalancer":{"algorithm":"RingHash","ringHash":{"header":"x-user","minimumRingSize":64}},`+
		`"locality":{"mode":"PreferZone","minHealthyPercent":70}}`), []byte(`{}`))
	f.Add([]byte(`{"targetRef":{"name":"reviews"},"outlierDetection":{"failurePercentage":50,"minimumRequests":5,"interval":"1s"},`+
		`"connectionPool":{"maxRequests":1},"rateLimit":{"requests":10,"interval":"1s"},`+
		`"http":[{"matches":[{"path":{"type":"RegularExpression","value":"/a.*"}}],"fault":{"abort":{"grpcStatus":14,"percentage":5}},"mirror":{"name":"reviews","subset":"v2"},"backends":[{"subset":"v1","weight":100}]}]}`),
		[]byte(`{"allow":[{"from":[{"namespace":"shop"}],"methods":["POST"]}]}`))
	f.Fuzz(func(t *testing.T, policy, service []byte) {
		in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), xdstest.Ready("reviews-v2", "v2", "10.1.0.2", 9080))
		tp := &in.TrafficPolicies[0]
		tp.Spec = meshv1.TrafficPolicySpec{}
		if json.Unmarshal(policy, &tp.Spec) != nil {
			return
		}
		ms := &in.MeshServices[0]
		var extra meshv1.MeshServiceSpec
		if json.Unmarshal(service, &extra) != nil {
			return
		}
		ms.Spec.Allow = extra.Allow
		m := mesh.Build(in)
		sh, err := BuildShared(m, nil, Options{EnvoyCerts: EnvoyCertsSDS})
		if err != nil {
			if m.Verdicts[mesh.Ref{Kind: mesh.KindTrafficPolicy, Namespace: tp.Namespace, Name: tp.Name}].InForce() {
				t.Fatalf("a policy in force fails translation: %v", err)
			}
			return
		}
		for _, p := range []Proxy{{ID: "c", Flavour: wire.FlavourGRPC}, {ID: "s", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"},
			{ID: "g", Flavour: wire.FlavourGRPC, Pod: "bookinfo/reviews-v2", Delivery: wire.DeliveryPodCertificate},
			{ID: "h", Flavour: wire.FlavourGRPC, Pod: "bookinfo/reviews-v1", Delivery: wire.DeliverySDS}} {
			r, err := forProxy(sh, p)
			if err != nil {
				t.Fatalf("%s: %v", p.Flavour, err)
			}
			if err := r.Validate(); err != nil {
				t.Fatalf("%s: %v", p.Flavour, err)
			}
		}
	})
}

// FuzzAccessLogFormat: the check never panics, an accepted format makes
// an access logger that passes Envoy's validation, and the chart's schema
// pattern never accepts what the check refuses.
func FuzzAccessLogFormat(f *testing.F) {
	for _, s := range []string{"%START_TIME% %REQ(:PATH)% %RESPONSE_CODE%", "100%% %PROTOCOL()%", "%REQ%", "%START_TIME(%Y)%", "%FOO", "%DYNAMIC_METADATA(a:b):5%"} {
		f.Add(s)
	}
	pattern := regexp.MustCompile(AccessLogFormatPattern())
	f.Fuzz(func(t *testing.T, format string) {
		err := CheckAccessLogFormat(format)
		if err != nil {
			// Chart values are text: the schema never sees invalid UTF-8.
			if format != "json" && utf8.ValidString(format) && pattern.MatchString(format) {
				t.Fatalf("the schema pattern accepts %q, which the check refuses: %v", format, err)
			}
			return
		}
		if strings.Contains(format, "\n") || format == "" {
			return
		}
		for _, l := range (Observability{AccessLogFormat: format}).accessLogs() {
			if err := l.ValidateAll(); err != nil {
				t.Fatalf("%q: %v", format, err)
			}
		}
	})
}

// FuzzAllowRules: any allow rules and default inbound policy give, for an
// HTTP and a TCP port, RBAC that passes Envoy's validation.
func FuzzAllowRules(f *testing.F) {
	f.Add([]byte(`[{"from":[{"namespace":"shop","serviceAccount":"web"},{"identity":"spiffe://cluster.local/ns/a/sa/b"}],"paths":[{"type":"Prefix","value":"/api"}],"methods":["GET"]}]`), "all")
	f.Add([]byte(`[{"from":[{"namespace":"*"}],"ports":[9080],"paths":[{"type":"RegularExpression","value":"/v[0-9]+/.*"}]}]`), "deny")
	f.Add([]byte(`[]`), "namespace")
	f.Fuzz(func(t *testing.T, rules []byte, def string) {
		s := &mesh.Service{Namespace: "shop", DefaultInbound: wire.DefaultInbound(def)}
		if json.Unmarshal(rules, &s.Allow) != nil {
			return
		}
		for _, http := range []bool{true, false} {
			if r := allowRules(s, mesh.Port{Number: 9080}, "cluster.local", http); r != nil {
				if err := r.ValidateAll(); err != nil {
					t.Fatalf("http %v: %v", http, err)
				}
			}
		}
	})
}
