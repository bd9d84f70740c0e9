package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/cli"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// shopMesh is a controller on a real API server with a small mesh, and
// raw ADS clients that record what they are sent:
//
//   - shop/reviews (gRPC 9080, subsets v1 and v2, a rule that lets only
//     shop/productpage in), its TrafficPolicy canary, pods reviews-v1 and
//     reviews-v2;
//   - shop/ratings (HTTP 9090, no rules), pod ratings-v1;
//   - the PeerAuthentication shop/default (PERMISSIVE) over shop's pods;
//   - other/vault (gRPC 8200, a rule that lets only other/admin in), its
//     TrafficPolicy vault-timeouts, the PeerAuthentication other/default
//     (STRICT), pod vault-0.
//
// The client productpage (a proxyless gRPC client) and the sidecar of
// reviews-v1 (an Envoy sidecar's node) are connected.
type shopMesh struct {
	ctx        context.Context
	c          client.Client
	ads        string
	kubeconfig string
	weft       string
	clients    map[string]*xdstest.Recorder
}

var allTypes = []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

func newShopMesh(ctx context.Context, t *testing.T) *shopMesh {
	t.Helper()
	env, ads := startController(ctx, t)
	m := &shopMesh{ctx: ctx, c: env.Client, ads: ads, weft: testenv.Binary(t, "weft"), clients: map[string]*xdstest.Recorder{}}
	m.kubeconfig = t.TempDir() + "/kubeconfig"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(env.Kubeconfig(m.kubeconfig))
	for _, ns := range []string{"shop", "other"} {
		must(m.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{wire.LabelInject: wire.InjectEnabled}}}))
	}
	service := func(ns, name string, port int32, protocol meshv1.Protocol, subsets []meshv1.Subset, allow []meshv1.AllowRule) {
		must(m.c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "main", Port: port, TargetPort: intstr.FromString("main")}},
		}}))
		must(m.c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: meshv1.MeshServiceSpec{
			ServiceName: name, Ports: []meshv1.MeshServicePort{{Port: port, Protocol: protocol}}, Subsets: subsets, Allow: allow}}))
	}
	pod := func(ns, name, app, version, sa, ip string, port int32) {
		must(m.c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app, "version": version}},
			Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
		if ip == "" {
			return
		}
		must(m.c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: app}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("main"), Port: ptr.To(port)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}}},
		}))
	}
	service("shop", "reviews", 9080, meshv1.ProtocolGRPC,
		[]meshv1.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
		[]meshv1.AllowRule{{From: []meshv1.Source{{Namespace: "shop", ServiceAccount: "productpage"}}}})
	service("shop", "ratings", 9090, meshv1.ProtocolHTTP, nil, nil)
	service("other", "vault", 8200, meshv1.ProtocolGRPC, nil, []meshv1.AllowRule{{From: []meshv1.Source{{Namespace: "other", ServiceAccount: "admin"}}}})
	must(m.c.Create(ctx, &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "canary"}, Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Name: "reviews"},
		Timeouts:  &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("2s")},
		HTTP: []meshv1.HTTPRoute{
			{Name: "testers", Matches: []meshv1.HTTPMatch{{Headers: []meshv1.HeaderMatch{{Name: "x-canary", Value: ptr.To("true")}}}},
				Backends: []meshv1.WeightedBackend{{Subset: "v2", Weight: 100}}},
			{Name: "split", Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}}},
		}}}))
	must(m.c.Create(ctx, &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "vault-timeouts"}, Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Name: "vault"}, Timeouts: &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("1s")}}}))
	must(m.c.Create(ctx, &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSPermissive}}))
	must(m.c.Create(ctx, &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}))
	pod("shop", "reviews-v1", "reviews", "v1", "reviews", "192.0.2.51", 9080)
	pod("shop", "reviews-v2", "reviews", "v2", "reviews", "192.0.2.52", 9080)
	pod("shop", "ratings-v1", "ratings", "v1", "ratings", "192.0.2.53", 9090)
	pod("shop", "productpage", "productpage", "v1", "productpage", "", 0)
	pod("other", "vault-0", "vault", "v1", "vault", "192.0.2.54", 8200)

	envoy := &structpb.Struct{Fields: map[string]*structpb.Value{wire.MetaFlavour: structpb.NewStringValue(string(wire.FlavourEnvoy))}}
	m.clients["productpage"] = xdstest.NewRecorder(t, ads, wire.NodeID("productpage", "shop"), nil, allTypes...)
	m.clients["reviews-v1"] = xdstest.NewRecorder(t, ads, wire.NodeID("reviews-v1", "shop"), envoy, allTypes...)
	return m
}

// settled waits until a client acknowledged its last response of every
// type, and the xDS server says so too: every type synced, at the version
// the client acknowledged, made from the current generations.
func (m *shopMesh) settled(t *testing.T, pod string) map[string]*discovery.DiscoveryResponse {
	t.Helper()
	var acked map[string]*discovery.DiscoveryResponse
	if err := testenv.Eventually(m.ctx, time.Minute, func(ctx context.Context) error {
		received, ack := m.clients[pod].Responses()
		if len(ack) != len(allTypes) {
			return fmt.Errorf("%s acknowledged %d types", pod, len(ack))
		}
		for typeURL, r := range received {
			if ack[typeURL].GetVersionInfo() != r.GetVersionInfo() {
				return fmt.Errorf("%s has not acknowledged its last %s", pod, typeURL)
			}
		}
		c, err := cli.FetchProxy(ctx, m.ads, wire.NodeID(pod, "shop"))
		if err != nil {
			return err
		}
		pc, err := cli.ParseProxyConfig(c)
		if err != nil {
			return err
		}
		for _, tc := range pc.Types {
			if tc.Status != "synced" || tc.Acknowledged != ack[tc.URL].GetVersionInfo() {
				return fmt.Errorf("%s %s: %s, acknowledged %q; the client acknowledged %q", pod, tc.Name, tc.Status, tc.Acknowledged, ack[tc.URL].GetVersionInfo())
			}
		}
		acked = ack
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return acked
}

// run runs the weft binary and returns its output and exit status.
func (m *shopMesh) run(args ...string) (string, error) {
	cmd := exec.CommandContext(m.ctx, m.weft, args...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out) + string(ee.Stderr), err
	}
	return string(out), err
}

// configOutput is what weft config -o json prints.
type configOutput struct {
	Proxy   string `json:"proxy"`
	Flavour string `json:"flavour"`
	Types   []struct {
		Type         string `json:"type"`
		TypeURL      string `json:"typeUrl"`
		Status       string `json:"status"`
		VersionSent  string `json:"versionSent"`
		VersionAcked string `json:"versionAcknowledged"`
		VersionShown string `json:"versionShown"`
		Resources    []struct {
			Name   string          `json:"name"`
			Config json.RawMessage `json:"config"`
		} `json:"resources"`
	} `json:"types"`
}

// TestWeftConfigIsWhatTheProxyReceived: for a proxyless client and a
// sidecar, weft config's output, per type, holds exactly the resources the
// client received (decoded, compared as messages, in order, with their
// names) and the versions it was sent and acknowledged; YAML says the same
// as JSON; --type narrows it; a pod with no proxy is an error that says so.
func TestWeftConfigIsWhatTheProxyReceived(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	m := newShopMesh(ctx, t)
	for _, pod := range []string{"productpage", "reviews-v1"} {
		t.Run(pod, func(t *testing.T) {
			// The mesh settles (its objects reach the model in bursts):
			// once the client holds what it was last sent, the output
			// must be exactly that.
			var got configOutput
			if err := testenv.Eventually(ctx, time.Minute, func(context.Context) error {
				acked := m.settled(t, pod)
				out, err := m.run("config", pod, "-n", "shop", "-o", "json", "--xds-address", m.ads)
				if err != nil {
					return fmt.Errorf("weft config: %v\n%s", err, out)
				}
				got = configOutput{}
				if err := json.Unmarshal([]byte(out), &got); err != nil {
					return fmt.Errorf("weft config -o json: %v\n%s", err, out)
				}
				return sameAsReceived(pod, got, acked)
			}); err != nil {
				t.Fatal(err)
			}
			// YAML says the same.
			y, err := m.run("config", pod, "-n", "shop", "--xds-address", m.ads)
			if err != nil {
				t.Fatalf("weft config: %v\n%s", err, y)
			}
			fromYAML, err := yaml.YAMLToJSON([]byte(y))
			if err != nil {
				t.Fatal(err)
			}
			var again configOutput
			if err := json.Unmarshal(fromYAML, &again); err != nil || len(again.Types) != len(got.Types) || again.Types[0].VersionSent != got.Types[0].VersionSent {
				t.Errorf("weft config's YAML does not say what its JSON says (%v):\n%s", err, y)
			}
		})
	}
	out, err := m.run("config", "productpage", "-n", "shop", "--type", "clusters", "-o", "json", "--xds-address", m.ads)
	var clusters configOutput
	if err != nil || json.Unmarshal([]byte(out), &clusters) != nil || len(clusters.Types) != 1 || clusters.Types[0].Type != "clusters" {
		t.Errorf("weft config --type clusters (%v):\n%s", err, out)
	}
	if out, err := m.run("config", "ratings-v1", "-n", "shop", "--xds-address", m.ads); err == nil || !strings.Contains(out, "no proxy ratings-v1.shop is connected") {
		t.Errorf("weft config for a pod without a proxy: %v\n%s", err, out)
	}
	if out, err := m.run("config", "productpage", "-n", "shop", "--type", "secret", "--xds-address", m.ads); err == nil || !strings.Contains(out, `--type: "secret"`) {
		t.Errorf("weft config --type secret: %v\n%s", err, out)
	}
}

// sameAsReceived compares weft config's output for a pod with the
// responses its client acknowledged: per type, the versions and each
// resource, decoded, in order, with its name.
func sameAsReceived(pod string, got configOutput, acked map[string]*discovery.DiscoveryResponse) error {
	if got.Proxy != wire.NodeID(pod, "shop") || len(got.Types) != len(allTypes) {
		return fmt.Errorf("weft config shows proxy %q with %d types, want %s with %d", got.Proxy, len(got.Types), wire.NodeID(pod, "shop"), len(allTypes))
	}
	var errs []string
	for _, tc := range got.Types {
		want := acked[tc.TypeURL]
		if want == nil {
			errs = append(errs, fmt.Sprintf("weft config shows %s, which the client never asked for", tc.TypeURL))
			continue
		}
		if tc.VersionSent != want.GetVersionInfo() || tc.VersionAcked != want.GetVersionInfo() || tc.VersionShown != "" || tc.Status != "synced" {
			errs = append(errs, fmt.Sprintf("%s: weft config says sent %q, acknowledged %q (%s); the client received and acknowledged %q",
				tc.Type, tc.VersionSent, tc.VersionAcked, tc.Status, want.GetVersionInfo()))
		}
		if len(tc.Resources) != len(want.GetResources()) {
			errs = append(errs, fmt.Sprintf("%s: weft config shows %d resources, the client received %d", tc.Type, len(tc.Resources), len(want.GetResources())))
			continue
		}
		for i, r := range tc.Resources {
			received, err := want.GetResources()[i].UnmarshalNew()
			if err != nil {
				return err
			}
			shown := received.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal(r.Config, shown); err != nil {
				return fmt.Errorf("%s %s: %w", tc.Type, r.Name, err)
			}
			if !proto.Equal(shown, received) {
				errs = append(errs, fmt.Sprintf("%s %d (%s): weft config shows\n%v\nthe client received\n%v", tc.Type, i, r.Name, shown, received))
			}
			if name := cachev3.GetResourceName(received); name != r.Name {
				errs = append(errs, fmt.Sprintf("%s %d: weft config names it %q, it is %q", tc.Type, i, r.Name, name))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}
