package test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testenv/kubelet"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// callCredsEnv makes grpc-go send the call credentials of an xDS
// bootstrap (the pod's token); grpc-go reads it once, when it starts.
const callCredsEnv = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"

// TestPrometheusScrapesTheControlPlane: a real Prometheus (bin/prometheus,
// built from its pinned module) scrapes the controller binary's metrics
// endpoint over HTTPS with the token of a ServiceAccount bound to
// weft-metrics-reader (one without the binding is refused), while the
// controller injects pods through the real API server and serves grpc-go
// xDS clients that authenticate with their pods' tokens. Each weft metric
// is seen to move, through Prometheus's query API, when its event
// happens: a pod injected and one skipped, a pod certificate issued and
// one refused, a proxy of each flavour connecting and leaving, a sidecar's
// leaf over SDS and the soonest expiry, a policy change pushed and
// acknowledged, a NACK attributed to its MeshService and its proxy waiting
// as the stalest until it leaves, a reconcile error (an admission policy
// refusing a MeshService's status), a root rotation; the replica, without
// leader election, leads. Then every query of the chart's control-plane
// dashboard returns data over the run.
// promtool check metrics passes on the endpoint's text, which names every
// metric of internal/metrics.
func TestPrometheusScrapesTheControlPlane(t *testing.T) {
	t.Setenv(callCredsEnv, "true") // for the child below
	if !testenv.InOwnNetworkNamespace(t, "192.0.2.61") {
		return
	}
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	prometheusBin, promtool := filepath.Join(root, "bin", "prometheus"), filepath.Join(root, "bin", "promtool")
	for _, b := range []string{prometheusBin, promtool} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s is missing (%v): run 'make tools'", filepath.Base(b), err)
		}
	}
	env, err := testenv.StartWith(testenv.Options{WebhookDirs: []string{filepath.Join(root, "config", "webhook")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const ns = "shop"
	for _, n := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}},
		{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{wire.LabelInject: wire.InjectEnabled}}},
	} {
		must(c.Create(ctx, n))
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	must(c.Create(ctx, node))

	// The controller binary: metrics on loopback, the webhook where the
	// API server calls it (envtest's address and certificate), the xDS
	// server authenticating tokens, its certificate for "localhost".
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(env.Kubeconfig(kubeconfig))
	_, webhookPort, webhookCerts := env.WebhookServing()
	metricsPort, xdsPort := freePort(t), freePort(t)
	weft := testenv.Binary(t, "weft")
	runWeftController(t, weft, filepath.Join(dir, "weft.log"), "--kubeconfig="+kubeconfig, "--mesh-namespace=weft-system",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort), "--health-probe-bind-address=0",
		fmt.Sprintf("--webhook-port=%d", webhookPort), "--webhook-cert-dir="+webhookCerts, "--webhook-configuration=",
		fmt.Sprintf("--xds-bind-address=127.0.0.1:%d", xdsPort), "--xds-host=localhost", "--xds-status-bind-address=",
		"--log-format=console")
	xdsAddr := fmt.Sprintf("127.0.0.1:%d", xdsPort)

	// Prometheus's identity: a ServiceAccount bound to the chart's
	// weft-metrics-reader, and one that is not.
	reader := readerRole(t)
	must(c.Create(ctx, reader))
	for _, sa := range []string{"prometheus", "stranger"} {
		must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: sa}}))
	}
	must(c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-reads-weft"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "monitoring", Name: "prometheus"}}}))
	tokens := map[string]string{}
	for _, sa := range []string{"prometheus", "stranger"} {
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
		must(c.SubResource("token").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: sa}}, tr))
		tokens[sa] = filepath.Join(dir, sa+".token")
		must(os.WriteFile(tokens[sa], []byte(tr.Status.Token), 0o600))
	}
	prom := startPrometheus(t, prometheusBin, dir, fmt.Sprintf("127.0.0.1:%d", metricsPort), tokens)
	started := time.Now()

	// What Prometheus sees.
	value := func(expr string) float64 {
		t.Helper()
		v, err := prom.query(ctx, expr)
		must(err)
		return v
	}
	waitFor := func(what, expr string, ok func(float64) bool) float64 {
		t.Helper()
		var got float64
		err := testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
			v, err := prom.query(ctx, expr)
			if err != nil {
				return err
			}
			if got = v; !ok(v) {
				return fmt.Errorf("%s is %v", expr, v)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return got
	}
	// fresh waits for a scrape that began after now: what Prometheus
	// says next is what the controller counted before the call.
	fresh := func() {
		t.Helper()
		now := float64(time.Now().UnixMilli()) / 1000
		waitFor("a new scrape", `timestamp(up{job="weft"})`, func(v float64) bool { return v > now })
	}
	// moved returns a wait for expr (a sum, or vector(0) while the series
	// is absent) to grow by at least n from its value now.
	moved := func(expr string, n float64) func(what string) {
		before := value(expr)
		return func(what string) {
			t.Helper()
			waitFor(what, expr, func(v float64) bool { return v >= before+n })
		}
	}
	sum := func(selector string) string { return "sum(" + selector + ") or vector(0)" }

	waitFor("the controller scraped with the reader's token", `up{job="weft"}`, func(v float64) bool { return v == 1 })
	waitFor("the stranger refused", `up{job="stranger"}`, func(v float64) bool { return v == 0 })
	waitFor("the one replica, without --leader-elect, leads", `weft_leader{job="weft"}`, func(v float64) bool { return v == 1 })

	// The injection webhook: once it answers, a pod injected and one
	// skipped, with their latency.
	must(testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
		p := plainPod("probe", "default")
		if err := c.Create(ctx, p, client.DryRunAll); err != nil {
			return err
		}
		if p.Annotations[inject.AnnotationInjected] == "" {
			return errors.New("not injected yet")
		}
		return nil
	}))
	fresh()
	injected := moved(sum(`weft_injections_total{outcome="injected"}`), 1)
	injectedTime := moved(sum(`weft_injection_duration_seconds_count{outcome="injected"}`), 1)
	skipped := moved(sum(`weft_injections_total{outcome="skipped",reason="HostNetwork"}`), 1)
	refused := moved(sum(`weft_injections_total{outcome="refused",reason="InvalidAnnotation"}`), 1)
	must(c.Create(ctx, plainPod("web", "default")))
	rs, hostPod := ownedHostNetworkPod(t, ctx, c, ns, "agent")
	must(c.Create(ctx, hostPod))
	bad := plainPod("bad", "default")
	bad.Annotations = map[string]string{inject.AnnotationProxy: "linkerd"}
	if err := c.Create(ctx, bad); err == nil {
		t.Fatal("a pod with an invalid weft annotation was admitted")
	}
	injected("a pod injected")
	injectedTime("the injection's latency")
	skipped("a pod on the host's network skipped")
	refused("a pod with an invalid annotation refused")
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		return findEvent(ctx, c, ns, "ReplicaSet", rs.Name, wire.EventInjectionSkipped, "the host's network")
	}))

	// The mesh: reviews with one backend on the namespace's loopback.
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}
	must(c.Create(ctx, ms))
	port := xdstest.StartBackend(t, "192.0.2.61:0", "reviews-0")
	backend := plainPod("reviews-0", "default")
	backend.Labels = map[string]string{"app": "reviews"}
	must(c.Create(ctx, backend))
	must(c.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "reviews-0", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(port)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.61"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "reviews-0"}}},
	}))

	// A pod certificate issued, and one refused.
	must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client"}}))
	clientPod := plainPod("client-0", "client")
	clientPod.Spec.NodeName = node.Name
	must(c.Create(ctx, clientPod))
	fresh()
	issuedPod := moved(sum(`weft_certificates_issued_total{delivery="podCertificate"}`), 1)
	refusedPod := moved(sum(`weft_certificates_refused_total{delivery="podCertificate",reason="PodMismatch"}`), 1)
	kl := &kubelet.Kubelet{Client: c, Node: node, Dir: filepath.Join(dir, "pods")}
	if _, err := kl.Certify(ctx, clientPod); err != nil {
		t.Fatal(err)
	}
	issuedPod("a pod certificate issued")
	mismatched(t, ctx, c, clientPod, node)
	refusedPod("a pod certificate refused")

	// A grpc-go xDS client of the client pod, authenticated by its token
	// over TLS checked against the mesh's roots, calls reviews by name.
	var bundle corev1.ConfigMap
	must(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: wire.BundleConfigMap}, &bundle))
	rootsFile := filepath.Join(dir, "roots.pem")
	must(os.WriteFile(rootsFile, []byte(bundle.Data[wire.BundleKey]), 0o600))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(bundle.Data[wire.BundleKey]))
	fresh()
	grpcBefore := value(sum(`weft_xds_proxies{flavour="grpc"}`))
	pushes := moved(sum(`weft_xds_pushes_total`), 4) // listener, route, cluster, endpoints
	pushed := moved(sum(`weft_xds_push_size_bytes_sum`), 1)
	proxyTranslation := moved(sum(`weft_xds_translation_duration_seconds_count{part="proxy"}`), 1)
	cl := tokenClient(t, ctx, c, clientPod, fmt.Sprintf("localhost:%d", xdsPort), rootsFile, filepath.Join(dir, "client-0.token"),
		"reviews.shop.svc.cluster.local:9080")
	callCtx, callCancel := context.WithTimeout(ctx, 2*time.Minute)
	if got, err := cl.Call(callCtx, grpc.WaitForReady(true)); err != nil || got != "reviews-0" {
		t.Fatalf("the client's call went to %q: %v", got, err)
	}
	callCancel()
	waitFor("the grpc-go client connected", sum(`weft_xds_proxies{flavour="grpc"}`), func(v float64) bool { return v == grpcBefore+1 })
	pushes("its configuration pushed")
	pushed("the bytes of its configuration")
	proxyTranslation("its translation")

	// A policy change: translated once, pushed, acknowledged.
	fresh()
	propagated := moved(sum(`weft_xds_propagation_duration_seconds_count`), 1)
	sharedTranslation := moved(sum(`weft_xds_translation_duration_seconds_count{part="shared"}`), 1)
	tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Name: "reviews"}, Timeouts: &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("5s")}}}
	must(c.Create(ctx, tp))
	must(testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
			return err
		}
		if r := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue || r.ObservedGeneration != tp.Generation {
			return fmt.Errorf("Ready %+v", r)
		}
		return nil
	}))
	propagated("the change acknowledged")
	sharedTranslation("the model translated")
	if got, err := cl.Call(ctx); err != nil || got != "reviews-0" {
		t.Fatalf("after the policy, the call went to %q: %v", got, err)
	}

	// A NACK of reviews' Listener, in grpc-go's words (they name the
	// resource), on a raw ADS stream.
	picky := plainPod("picky-0", "client")
	must(c.Create(ctx, picky))
	fresh()
	lds := fmt.Sprintf(`{type_url=%q,flavour="grpc"}`, resource.ListenerType)
	nacked := moved(sum(`weft_xds_nacks_total`+lds), 1)
	nackedService := moved(sum(`weft_xds_service_nacks_total{meshservice="shop/reviews"}`), 1)
	nackedAt := time.Now().Unix()
	closeNACK := nack(t, ctx, c, picky, xdsAddr, roots, "reviews.shop.svc.cluster.local:9080")
	nacked("the NACK by type")
	nackedService("the NACK by MeshService")
	// The proxy that rejected its configuration holds none it acknowledged:
	// it is the stalest, waiting since it was sent the Listener; once it
	// leaves, no proxy waits.
	waitFor("the rejecting proxy waits", `min(weft_xds_unacknowledged_since_timestamp_seconds{flavour="grpc"})`,
		func(v float64) bool { return v >= float64(nackedAt) && v <= float64(time.Now().Unix()) })
	closeNACK()
	waitFor("no proxy waits once it left", sum(`count(weft_xds_unacknowledged_since_timestamp_seconds)`), func(v float64) bool { return v == 0 })

	// A sidecar's leaf over SDS, and the soonest expiry among those
	// served; the sidecar and the grpc-go client leaving.
	fresh()
	envoyBefore := value(sum(`weft_xds_proxies{flavour="envoy"}`))
	issuedSDS := moved(sum(`weft_certificates_issued_total{delivery="sds"}`), 1)
	sideCtx, closeSidecar := context.WithCancel(ctx)
	side := &sidecars{t: t, ctx: sideCtx, c: c, addr: xdsAddr, roots: roots, serverName: "localhost", pods: map[string]*corev1.Pod{}}
	side.pod(t, "side-0", "side")
	_, leaf := side.open(t, "side-0").leaf(t, time.Minute)
	issuedSDS("a sidecar's leaf")
	waitFor("the sidecar connected", sum(`weft_xds_proxies{flavour="envoy"}`), func(v float64) bool { return v == envoyBefore+1 })
	waitFor("the soonest leaf", `weft_certificates_soonest_expiry_timestamp_seconds{delivery="sds"}`,
		func(v float64) bool { return v == float64(leaf.NotAfter.Unix()) })

	// Now that every weft metric has a series (but the age of the stalest
	// proxy, which has one only while a proxy waits, seen above), the
	// endpoint's text passes promtool and names each.
	text := scrape(t, ctx, fmt.Sprintf("https://127.0.0.1:%d/metrics", metricsPort), tokens["prometheus"])
	check := exec.CommandContext(ctx, promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	for _, name := range metricNames(t) {
		if name != "weft_xds_unacknowledged_since_timestamp_seconds" && !regexp.MustCompile(`(?m)^# TYPE `+name+` `).Match(text) {
			t.Errorf("the endpoint does not serve %s", name)
		}
	}

	closeSidecar()
	waitFor("the sidecar left", sum(`weft_xds_proxies{flavour="envoy"}`), func(v float64) bool { return v == envoyBefore })
	grpcNow := value(sum(`weft_xds_proxies{flavour="grpc"}`))
	must(cl.Close())
	waitFor("the grpc-go client left", sum(`weft_xds_proxies{flavour="grpc"}`), func(v float64) bool { return v == grpcNow-1 })
	// Its MeshService counts no proxy any more.
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
			return err
		}
		if ms.Status.Proxies.Total != 0 {
			return fmt.Errorf("status.proxies %+v", ms.Status.Proxies)
		}
		return nil
	}))

	// A reconcile error: an admission policy refuses the status of the
	// MeshServices named "broken", so their status writer fails.
	fresh()
	reconcileErrors := moved(sum(`controller_runtime_reconcile_errors_total{controller="meshservice"}`), 1)
	refuseStatus(t, ctx, c, "broken")
	must(c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "broken"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "broken", Ports: []meshv1.MeshServicePort{{Port: 80, Protocol: meshv1.ProtocolHTTP}}}}))
	reconcileErrors("the MeshService status writer refused")

	// The root rotated: the anchors' expiry gauges follow.
	expiry := `weft_trust_certificate_expiry_timestamp_seconds{role="anchor"}`
	waitFor("the root's expiry", "min("+expiry+")", func(v float64) bool { return v > float64(time.Now().Unix()) })
	if out, err := exec.CommandContext(ctx, weft, "ca", "rotate", "--kubeconfig="+kubeconfig, "--mesh-namespace=weft-system").CombinedOutput(); err != nil {
		t.Fatalf("weft ca rotate: %v\n%s", err, out)
	}
	waitFor("both roots' expiry after the rotation", "count("+expiry+")", func(v float64) bool { return v == 2 })

	// Every query of the control-plane dashboard returns data from what
	// this run made.
	checkDashboardData(ctx, t, prom, "weft-control-plane.json", started)
}

// readerRole is the ClusterRole weft-metrics-reader from config/rbac.
func readerRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "config", "rbac", "metrics_auth_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range decodeAll(t, b) {
		if o.GetKind() == "ClusterRole" && o.GetName() == "weft-metrics-reader" {
			var role rbacv1.ClusterRole
			raw, err := o.MarshalJSON()
			if err == nil {
				err = json.Unmarshal(raw, &role)
			}
			if err != nil {
				t.Fatal(err)
			}
			return &role
		}
	}
	t.Fatal("config/rbac/metrics_auth_role.yaml holds no ClusterRole weft-metrics-reader")
	return nil
}

// promServer is a Prometheus the test started.
type promServer struct{ base string }

// startPrometheus runs Prometheus on loopback until the test ends,
// scraping the controller every second as job weft with the token of
// tokens["prometheus"], and as job stranger with tokens["stranger"]; its
// storage is in a directory of its own.
func startPrometheus(t *testing.T, bin, dir, target string, tokens map[string]string) *promServer {
	t.Helper()
	job := func(name, token string) string {
		return fmt.Sprintf(`- job_name: %s
  scheme: https
  # controller-runtime signs the endpoint's certificate itself; the
  # caller is authenticated by its token.
  tls_config: {insecure_skip_verify: true}
  authorization: {credentials_file: %q}
  static_configs: [{targets: [%q]}]
`, name, token, target)
	}
	config := "global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n" + job("weft", tokens["prometheus"]) + job("stranger", tokens["stranger"])
	return runPrometheus(t, bin, dir, config)
}

// runPrometheus runs Prometheus on loopback with config until the test
// ends, its storage in a directory of its own, with extra flags.
func runPrometheus(t *testing.T, bin, dir, config string, flags ...string) *promServer {
	t.Helper()
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--config.file=" + configFile, "--storage.tsdb.path=" + filepath.Join(dir, "tsdb"),
		"--web.listen-address=" + addr, "--log.level=warn"}, flags...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("Prometheus exited after SIGTERM with %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited //nolint:errcheck // killed
			t.Error("Prometheus did not stop within 30 s of SIGTERM")
		}
		_ = logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("Prometheus's log (the end):\n%s", tail(b, 4000))
		}
	})
	p := &promServer{base: "http://" + addr}
	if err := testenv.Eventually(context.Background(), time.Minute, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/-/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %s", resp.Status)
		}
		return nil
	}); err != nil {
		t.Fatalf("Prometheus never got ready: %v", err)
	}
	return p
}

// query evaluates an instant query that yields one sample and returns
// its value; no sample at all is an error.
func (p *promServer) query(ctx context.Context, expr string) (float64, error) {
	var data struct {
		Result []struct {
			Value []any `json:"value"`
		} `json:"result"`
	}
	if err := p.api(ctx, "query", url.Values{"query": {expr}}, &data); err != nil {
		return 0, err
	}
	if len(data.Result) != 1 || len(data.Result[0].Value) != 2 {
		return 0, fmt.Errorf("query %s: %d samples", expr, len(data.Result))
	}
	s, _ := data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("query %s: value %q", expr, s)
	}
	return v, nil
}

// api calls Prometheus's HTTP API (/api/v1/<endpoint>) and decodes the
// data of a successful answer into data; a failed one is an error naming
// the query.
func (p *promServer) api(ctx context.Context, endpoint string, v url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/api/v1/"+endpoint+"?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("query %s: %w", v.Get("query"), err)
	}
	if r.Status != "success" {
		return fmt.Errorf("query %s: %s", v.Get("query"), r.Error)
	}
	if err := json.Unmarshal(r.Data, data); err != nil {
		return fmt.Errorf("query %s: %w", v.Get("query"), err)
	}
	return nil
}

// plainPod is a pod of the namespace shop as a user writes it.
func plainPod(name, sa string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
}

// ownedHostNetworkPod makes a ReplicaSet and returns it with a pod of it
// (not created) that uses the host's network.
func ownedHostNetworkPod(t *testing.T, ctx context.Context, c client.Client, ns, name string) (*appsv1.ReplicaSet, *corev1.Pod) {
	t.Helper()
	labels := map[string]string{"app": name}
	p := plainPod(name+"-x1", "default")
	p.Labels, p.Spec.HostNetwork = labels, true
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: appsv1.ReplicaSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: p.Spec},
	}}
	if err := c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
	return rs, p
}

// findEvent finds an Event in ns about the named object, with the reason
// and a note containing note.
func findEvent(ctx context.Context, c client.Client, ns, kind, name, reason, note string) error {
	var list eventsv1.EventList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, ev := range list.Items {
		if ev.Regarding.Kind == kind && ev.Regarding.Name == name && ev.Reason == reason && strings.Contains(ev.Note, note) {
			return nil
		}
	}
	return fmt.Errorf("no %s Event on %s %s/%s saying %q among %d", reason, kind, ns, name, note, len(list.Items))
}

// mismatched asks for a certificate of pod under a ServiceAccount it
// does not run as, which weft refuses (PodMismatch).
func mismatched(t *testing.T, ctx context.Context, c client.Client, pod *corev1.Pod, node *corev1.Node) {
	t.Helper()
	other := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: "other"}}
	if err := c.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	pcr := &certificatesv1.PodCertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name + "-other"},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: kubelet.DefaultSigner, PodName: pod.Name, PodUID: pod.UID,
			ServiceAccountName: other.Name, ServiceAccountUID: other.UID,
			NodeName: types.NodeName(node.Name), NodeUID: node.UID,
			MaxExpirationSeconds: ptr.To[int32](3600), StubPKCS10Request: csr,
		}}
	if err := c.Create(ctx, pcr); err != nil {
		t.Fatal(err)
	}
}

// nack opens a raw ADS stream as pod's proxy (its token, TLS to the xDS
// server), asks for listener and rejects it as grpc-go would, naming it;
// the stream stays open until the returned func closes it.
func nack(t *testing.T, ctx context.Context, c client.Client, pod *corev1.Pod, addr string, roots *x509.CertPool, listener string) (closeStream func()) {
	t.Helper()
	token := podToken(t, ctx, c, pod)
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(bearerToken(token)))
	if err != nil {
		t.Fatal(err)
	}
	var open context.CancelFunc
	if err := testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		sctx, scancel := context.WithCancel(ctx)
		ok := false
		defer func() {
			if !ok {
				scancel()
			}
		}()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(sctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: wire.NodeID(pod.Name, pod.Namespace)},
			TypeUrl: resource.ListenerType, ResourceNames: []string{listener}}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if len(resp.GetResources()) == 0 {
			return errors.New("no Listener yet")
		}
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{listener},
			ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: 3,
				Message: fmt.Sprintf("resource %q: refused by the test", listener)}}); err != nil {
			return err
		}
		ok, open = true, scancel
		return nil
	}); err != nil {
		cc.Close()
		t.Fatal(err)
	}
	return func() {
		open()
		cc.Close()
	}
}

// podToken is a token of pod's ServiceAccount bound to it, for weft's
// xDS server.
func podToken(t *testing.T, ctx context.Context, c client.Client, pod *corev1.Pod) string {
	t.Helper()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{wire.TokenAudience}, ExpirationSeconds: ptr.To[int64](1200),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Spec.ServiceAccountName}}
	if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatalf("a token for pod %s: %v", pod.Name, err)
	}
	return tr.Status.Token
}

// tokenClient is a grpc-go channel to xds:///target whose own xDS client
// reaches server over TLS checked against rootsFile, with pod's token as
// its call credentials, as weft's injector bootstraps a proxyless pod.
func tokenClient(t *testing.T, ctx context.Context, c client.Client, pod *corev1.Pod, server, rootsFile, tokenFile, target string) *xdstest.Client {
	t.Helper()
	if err := os.WriteFile(tokenFile, []byte(podToken(t, ctx, c, pod)), 0o600); err != nil {
		t.Fatal(err)
	}
	bootstrap, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      server,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": map[string]string{"ca_certificate_file": rootsFile}}},
			"call_creds":      []any{map[string]any{"type": "jwt_token_file", "config": map[string]string{"jwt_token_file": tokenFile}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": wire.NodeID(pod.Name, pod.Namespace), "metadata": map[string]any{wire.MetaFlavour: string(wire.FlavourGRPC)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &xdstest.Client{ClientConn: cc}
}

// refuseStatus makes the API server refuse every write of the status of
// the MeshServices named name, with a ValidatingAdmissionPolicy, and
// waits until it does.
func refuseStatus(t *testing.T, ctx context.Context, c client.Client, name string) {
	t.Helper()
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "refuse-status-" + name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{meshv1.GroupVersion.Group}, APIVersions: []string{"*"},
						Resources: []string{"meshservices/status"}},
				}}}},
			Validations: []admissionregistrationv1.Validation{{Expression: fmt.Sprintf("object.metadata.name != %q", name),
				Message: "the test refuses this status"}},
		}}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}}}
	for _, o := range []client.Object{policy, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The policy is in force once a status write of such a MeshService
	// is refused.
	probe := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: name}, Spec: meshv1.MeshServiceSpec{
		ServiceName: name, Ports: []meshv1.MeshServicePort{{Port: 80, Protocol: meshv1.ProtocolHTTP}}}}
	if err := c.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(probe), probe); err != nil {
			return err
		}
		probe.Status.Conditions = []metav1.Condition{{Type: "Probe", Status: metav1.ConditionTrue, Reason: "Probe", Message: "probe",
			LastTransitionTime: metav1.Now()}}
		if err := c.Status().Update(ctx, probe); err == nil || !strings.Contains(err.Error(), "the test refuses this status") {
			return fmt.Errorf("a status write got %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// scrape reads the metrics endpoint as Prometheus does.
func scrape(t *testing.T, ctx context.Context, endpoint, tokenFile string) []byte {
	t.Helper()
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec // the endpoint signs its own certificate
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", endpoint, resp.Status, err)
	}
	return b
}

// metricNames lists the names of every metric of internal/metrics.
func metricNames(t *testing.T) []string {
	t.Helper()
	fq := regexp.MustCompile(`fqName: "([a-z_:]+)"`)
	var names []string
	for _, m := range metrics.All {
		ch := make(chan *prometheus.Desc, 4)
		m.Describe(ch)
		close(ch)
		for d := range ch {
			match := fq.FindStringSubmatch(d.String())
			if match == nil {
				t.Fatalf("no name in %s", d)
			}
			names = append(names, match[1])
		}
	}
	slices.Sort(names)
	return names
}
