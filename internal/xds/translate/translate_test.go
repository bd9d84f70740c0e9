package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// render writes resources as indented JSON, one xDS type after another.
func render(t *testing.T, r *Resources) []byte {
	t.Helper()
	var buf bytes.Buffer
	add := func(kind string, msgs []proto.Message) {
		for _, m := range msgs {
			raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := json.Indent(&out, raw, "", "  "); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("# " + kind + "\n")
			buf.Write(out.Bytes())
			buf.WriteString("\n")
		}
	}
	add("listener", toMsgs(r.Listeners))
	add("route", toMsgs(r.Routes))
	add("cluster", toMsgs(r.Clusters))
	add("endpoints", toMsgs(r.Endpoints))
	return buf.Bytes()
}

func toMsgs[T proto.Message](xs []T) []proto.Message {
	out := make([]proto.Message, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// A route that names a cluster that is not there is caught before
// anything is served.
func TestValidateCatchesDanglingReferences(t *testing.T) {
	m := mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080)))
	r, err := translateFor(m, Proxy{ID: "c", Flavour: wire.FlavourGRPC})
	if err != nil {
		t.Fatal(err)
	}
	r.Clusters = r.Clusters[1:]
	if err := r.Validate(); !errors.Is(err, ErrDangling) {
		t.Fatalf("want a dangling-reference error, got %v", err)
	}
}

// Policies and services whose verdicts refuse them leave no trace in the
// model.
func TestModelKeepsOnlyWhatIsInForce(t *testing.T) {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080))
	in.TrafficPolicies[0].Spec.HTTP[0].Backends[0].Subset = "v9" // no such subset
	m := mesh.Build(in)
	if s := m.Services["bookinfo/reviews"]; s == nil || len(s.Policies) != 0 {
		t.Fatalf("a refused policy made it into the model: %+v", s)
	}
	in.Services = nil
	if m := mesh.Build(in); len(m.Services) != 0 {
		t.Fatal("an unresolved MeshService made it into the model")
	}
}

// Unhonoured names what proxyless gRPC ignores and nothing for sidecars.
func TestUnhonoured(t *testing.T) {
	spec := &meshv1.TrafficPolicySpec{
		Timeouts:       &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("1s"), Connect: ptr.To[meshv1.Duration]("1s")},
		Retries:        &meshv1.RetryPolicy{Attempts: ptr.To[int32](2)},
		ConnectionPool: &meshv1.ConnectionPool{MaxRequests: ptr.To[int32](5), MaxConnections: ptr.To[int32](5)},
		LoadBalancer:   &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{Cookie: &meshv1.HashCookie{Name: "s"}}},
		HTTP:           []meshv1.HTTPRoute{{Mirror: &meshv1.Mirror{Name: "m"}}},
		Tracing:        &meshv1.Tracing{SamplingPercent: "10"},
	}
	want := []string{"spec.timeouts.connect", "spec.connectionPool.maxConnections", "spec.loadBalancer.ringHash.cookie", "spec.http[0].mirror", "spec.tracing.samplingPercent"}
	got := Unhonoured(spec, wire.FlavourGRPC)
	for i, g := range got {
		got[i], _, _ = strings.Cut(g, " (") // the field, without why
	}
	if !slices.Equal(got, want) {
		t.Errorf("Unhonoured(grpc) = %v, want %v", got, want)
	}
	if got := Unhonoured(spec, wire.FlavourEnvoy); got != nil {
		t.Errorf("Unhonoured(envoy) = %v, want nothing", got)
	}
	transportOnly := &meshv1.TrafficPolicySpec{Retries: &meshv1.RetryPolicy{RetryOn: []meshv1.RetryCondition{"reset", "connect-failure"}}}
	if got := Unhonoured(transportOnly, wire.FlavourGRPC); len(got) != 1 || !strings.HasPrefix(got[0], "spec.retries.retryOn") {
		t.Errorf("Unhonoured(retries on transport failures only) = %v, want spec.retries.retryOn", got)
	}
}

// A duration that admission should have refused fails the translation of
// its service with the policy and field named, so that the last good
// configuration stays in force.
func TestBadDurationNamesTheField(t *testing.T) {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080))
	in.TrafficPolicies[0].Spec.Timeouts = &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("soon")}
	_, err := BuildShared(mesh.Build(in), nil, Options{})
	if err == nil || !strings.Contains(err.Error(), "TrafficPolicy canary") || !strings.Contains(err.Error(), "timeouts.request") {
		t.Fatalf("BuildShared with a bad duration: %v, want an error naming the policy and timeouts.request", err)
	}
}

// A pod that is not ready yet is no caller's endpoint, but its own proxy
// gets its inbound configuration: a proxyless server serves only once it
// has its Listener, and a readiness probe through it needs that.
func TestStartingPodGetsItsInboundOnly(t *testing.T) {
	starting := xdstest.Backend{Pod: "reviews-v2", Version: "v2", IP: "10.1.0.2", Port: 9080}
	m := mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), starting))
	s := m.Services["bookinfo/reviews"]
	if len(s.Endpoints) != 1 || s.Endpoints[0].Address != "10.1.0.1" || len(s.Starting) != 1 || s.Starting[0].Address != "10.1.0.2" {
		t.Fatalf("endpoints %+v, starting %+v: want 10.1.0.1 ready and 10.1.0.2 starting", s.Endpoints, s.Starting)
	}
	client, err := translateFor(m, Proxy{ID: "c", Flavour: wire.FlavourGRPC})
	if err != nil {
		t.Fatal(err)
	}
	for _, cla := range client.Endpoints {
		if strings.Contains(protojson.Format(cla), "10.1.0.2") {
			t.Errorf("a caller is sent the starting pod in %s", cla.GetClusterName())
		}
	}
	for _, fl := range []wire.Flavour{wire.FlavourGRPC, wire.FlavourEnvoy} {
		sh, err := BuildShared(m, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		own, err := Own(sh, Proxy{ID: "reviews-v2.bookinfo", Flavour: fl, Pod: "bookinfo/reviews-v2"})
		if err != nil {
			t.Fatal(err)
		}
		// A proxyless server's Listener is named by its address, a
		// sidecar's inbound filter chain by its port.
		want := map[wire.Flavour]string{wire.FlavourGRPC: wire.ServerListenerName("10.1.0.2:9080"), wire.FlavourEnvoy: `"inbound|9080"`}[fl]
		found := false
		for _, l := range own.Listeners {
			found = found || strings.Contains(protojson.Format(l), want)
		}
		if !found {
			t.Errorf("%s: the starting pod's own proxy has no inbound configuration for port 9080 (%s): %v", fl, want, own.Listeners)
		}
	}
}
