package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	// A process of its own: the controller's reconcilers register
	// process-wide names.
	if !testenv.InOwnNetworkNamespace(t) {
		return
	}
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
				if err := sameAsReceived(pod, got, acked); err != nil {
					return err
				}
				// YAML says the same.
				y, err := m.run("config", pod, "-n", "shop", "--xds-address", m.ads)
				if err != nil {
					return fmt.Errorf("weft config: %v\n%s", err, y)
				}
				fromYAML, err := yaml.YAMLToJSON([]byte(y))
				if err != nil {
					return err
				}
				var again configOutput
				if err := json.Unmarshal(fromYAML, &again); err != nil {
					return err
				}
				if err := sameAsReceived(pod, again, acked); err != nil {
					return fmt.Errorf("weft config's YAML: %w", err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
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

// shapedBy reads the "Shaped by" table of weft describe: each object
// ("<Kind> <namespace>/<name>") with its ACKNOWLEDGED column.
func shapedBy(t *testing.T, out string) map[string]string {
	t.Helper()
	_, table, ok := strings.Cut(out, "\nShaped by:\n")
	if !ok {
		t.Fatalf("weft describe has no Shaped by table:\n%s", out)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 {
			t.Fatalf("weft describe: a row %q", line)
		}
		ack := f[4]
		if ack == "yes" || ack == "generation" {
			ack += " " + f[5]
		}
		rows[f[0]+" "+f[1]] = ack
	}
	return rows
}

// TestWeftDescribeAndTrace: weft describe names every object that shaped a
// pod's proxy (exactly what the xDS server recorded its acknowledged
// configuration was made from, at the same generations), and none that did
// not, for a proxyless client and for a sidecar serving a service; weft
// trace, the binary on the same mesh, walks a proxyless call by its
// canary header, a sidecar's HTTP request by the service's host, and
// calls into the sidecar from a caller its allow rule names and from one
// it does not.
func TestWeftDescribeAndTrace(t *testing.T) {
	// A process of its own: the controller's reconcilers register
	// process-wide names.
	if !testenv.InOwnNetworkNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	m := newShopMesh(ctx, t)
	var canary meshv1.TrafficPolicy
	if err := m.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "canary"}, &canary); err != nil {
		t.Fatal(err)
	}
	shaping := []string{"MeshService shop/ratings", "MeshService shop/reviews", "PeerAuthentication shop/default", "TrafficPolicy shop/canary"}
	for _, c := range []struct {
		pod   string
		wants []string
	}{
		{"productpage", []string{"MeshService shop/reviews (reviews.shop.svc.cluster.local): spec.allow[0] names it", "Kept out of (not sent to this proxy):\n  MeshService other/vault: none of its 1 allow rules names shop/productpage",
			"Serves:\n  nothing"}},
		{"reviews-v1", []string{"MeshService shop/reviews port 9080 (grpc) on pod port 9080, mTLS PERMISSIVE (set by PeerAuthentication shop/default)",
			"spec.allow[0]: from shop/productpage", "TrafficPolicy shop/canary is in force on the port", "MeshService shop/reviews: none of its 1 allow rules names shop/reviews"}},
	} {
		t.Run("describe "+c.pod, func(t *testing.T) {
			// Once the proxy acknowledged the current generation of every
			// object (and so nothing it holds is about to change), what
			// describe names must be what the server recorded.
			var out string
			var rows map[string]string
			if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
				m.settled(t, c.pod)
				pc, err := cli.FetchProxy(ctx, m.ads, wire.NodeID(c.pod, "shop"))
				if err != nil {
					return err
				}
				proxy, err := cli.ParseProxyConfig(pc)
				if err != nil {
					return err
				}
				if proxy.Acknowledged["TrafficPolicy/shop/canary"] != canary.Generation {
					return fmt.Errorf("the proxy acknowledged %v", proxy.Acknowledged)
				}
				if out, err = m.run("describe", c.pod, "-n", "shop", "--kubeconfig", m.kubeconfig, "--xds-address", m.ads); err != nil {
					return fmt.Errorf("weft describe: %v\n%s", err, out)
				}
				rows = shapedBy(t, out)
				var named, recorded []string
				for obj := range rows {
					named = append(named, obj)
				}
				for ref, g := range proxy.Acknowledged {
					kind, rest, _ := strings.Cut(ref, "/")
					recorded = append(recorded, kind+" "+rest)
					if rows[kind+" "+rest] != fmt.Sprintf("yes (%d)", g) {
						return fmt.Errorf("weft describe says %s was acknowledged %q; the server recorded generation %d\n%s", ref, rows[kind+" "+rest], g, out)
					}
				}
				slices.Sort(named)
				slices.Sort(recorded)
				if !slices.Equal(named, recorded) {
					return fmt.Errorf("weft describe names %v; the xDS server recorded %v\n%s", named, recorded, out)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			var named []string
			for obj := range rows {
				named = append(named, obj)
			}
			slices.Sort(named)
			if !slices.Equal(named, shaping) {
				t.Errorf("weft describe %s names %v, want %v", c.pod, named, shaping)
			}
			for _, w := range c.wants {
				if !strings.Contains(out, w) {
					t.Errorf("weft describe %s does not say %q:\n%s", c.pod, w, out)
				}
			}
			for _, unrelated := range []string{"other/vault-timeouts", "PeerAuthentication other/default"} {
				if strings.Contains(out, unrelated) {
					t.Errorf("weft describe %s names %s, which does not shape it:\n%s", c.pod, unrelated, out)
				}
			}
		})
	}

	trace := func(t *testing.T, wantErr bool, args ...string) string {
		t.Helper()
		out, err := m.run(append([]string{"trace", "-n", "shop", "--kubeconfig", m.kubeconfig, "--xds-address", m.ads}, args...)...)
		if (err != nil) != wantErr {
			t.Fatalf("weft trace %v: %v, want an error: %v\n%s", args, err, wantErr, out)
		}
		return out
	}
	wants := func(t *testing.T, out string, wants ...string) {
		t.Helper()
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("weft trace does not say %q:\n%s", w, out)
			}
		}
	}
	t.Run("trace a proxyless call by its header", func(t *testing.T) {
		out := trace(t, false, "productpage", "grpc://reviews.shop.svc.cluster.local:9080/weft.test.Reviews/Get", "-H", "x-canary=true")
		wants(t, out, "Listener:      reviews.shop.svc.cluster.local:9080", "Route:         #0 testers", "timeout 2s",
			fmt.Sprintf(`Policy:        TrafficPolicy shop/canary (generation %d, acknowledged by the proxy): spec.http[0] "testers"`, canary.Generation),
			"outbound|9080|v2|reviews.shop.svc.cluster.local", "endpoints: 192.0.2.52:9080")
		out = trace(t, false, "productpage", "grpc://reviews.shop.svc.cluster.local:9080/weft.test.Reviews/Get")
		wants(t, out, "outbound|9080|v1|reviews.shop.svc.cluster.local  weight 90 (90%)", "outbound|9080|v2|reviews.shop.svc.cluster.local  weight 10 (10%)",
			`spec.http[1] "split"`)
	})
	t.Run("trace a sidecar's request by host", func(t *testing.T) {
		out := trace(t, false, "reviews-v1", "http://ratings.shop.svc.cluster.local:9090/ratings/1")
		wants(t, out, "Listener:      weft-outbound", "Filter chain:  ratings.shop.svc.cluster.local:9090", "outbound|9090||ratings.shop.svc.cluster.local",
			"endpoints: 192.0.2.53:9090", "Policy:        none on this port of MeshService shop/ratings")
		// vault is not in the sidecar's scope: it was never sent.
		out = trace(t, true, "reviews-v1", "grpc://vault.other.svc.cluster.local:8200/x.Vault/Get")
		wants(t, out, "the service is not in the proxy's scope")
	})
	t.Run("trace calls into the sidecar", func(t *testing.T) {
		out := trace(t, false, "reviews-v1", "grpc://:9080/weft.test.Reviews/Get", "--from", "shop/productpage")
		wants(t, out, "From:          spiffe://cluster.local/ns/shop/sa/productpage (mTLS)", "Listener:      weft-inbound",
			"Serves:        MeshService shop/reviews", "Decision:      ALLOWED by spec.allow[0] of MeshService shop/reviews", "Cluster:       inbound|9080")
		out = trace(t, false, "reviews-v1", "grpc://:9080/weft.test.Reviews/Get", "--from", "shop/ratings")
		wants(t, out, "Decision:      DENIED: no allow rule of the port lets this caller and request in")
		out = trace(t, true, "reviews-v1", "grpc://:9080/weft.test.Reviews/Get", "--from", "productpage")
		wants(t, out, `--from "productpage": want <namespace>/<serviceaccount> or a SPIFFE ID`)
	})
}

// TestWeftAsKubectlPlugin: installed as kubectl-weft, the binary's user
// commands run through the real kubectl (kubectl weft config, describe,
// trace and check), with kubectl's exit status.
func TestWeftAsKubectlPlugin(t *testing.T) {
	// A process of its own: the controller's reconcilers register
	// process-wide names.
	if !testenv.InOwnNetworkNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	m := newShopMesh(ctx, t)
	dir := t.TempDir()
	if err := os.Symlink(m.weft, filepath.Join(dir, "kubectl-weft")); err != nil {
		t.Fatal(err)
	}
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(root, "bin", "k8s", testenv.K8sVersion, "kubectl")
	run := func(wantErr bool, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, kubectl, args...)
		cmd.Env = append(os.Environ(), "PATH="+dir, "KUBECACHEDIR="+t.TempDir(), "HOME="+t.TempDir(), "KUBECONFIG="+m.kubeconfig)
		out, err := cmd.CombinedOutput()
		if (err != nil) != wantErr {
			t.Fatalf("kubectl %s: %v, want an error: %v\n%s", strings.Join(args, " "), err, wantErr, out)
		}
		return string(out)
	}
	m.settled(t, "productpage")
	for _, c := range []struct {
		wantErr bool
		args    []string
		want    string
	}{
		{false, []string{"weft", "config", "productpage", "-n", "shop", "--type", "listeners", "--xds-address", m.ads}, "proxy: productpage.shop"},
		{false, []string{"weft", "describe", "productpage", "-n", "shop", "--xds-address", m.ads}, "Identity:     spiffe://cluster.local/ns/shop/sa/productpage"},
		{false, []string{"weft", "trace", "productpage", "-n", "shop", "--xds-address", m.ads, "grpc://reviews.shop.svc.cluster.local:9080/weft.test.Reviews/Get"},
			"outbound|9080|v1|reviews.shop.svc.cluster.local  weight 90 (90%)"},
		// No controller Deployment here: weft check says so and fails.
		{true, []string{"weft", "check", "-n", "shop"}, "error   Deployment weft-system/weft-controller: the controller's Deployment cannot be read"},
	} {
		if out := run(c.wantErr, c.args...); !strings.Contains(out, c.want) {
			t.Errorf("kubectl %s does not say %q:\n%s", strings.Join(c.args, " "), c.want, out)
		}
	}
}
