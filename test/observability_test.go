package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testenv/kubelet"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestProxylessTelemetryReachesTheCollector: a proxyless grpc-go client
// calls a grpc-go xDS server, both configured by weft from objects in a
// real API server, both the demo's workloads (hack/demo, whose
// OpenTelemetry set-up is the one docs/observability.md shows) run with
// the environment weft's injector gives their pods, expanded as the
// kubelet would. An OpenTelemetry collector built from its modules
// (bin/otelcol) receives, from each, metrics of grpc-go's plugin
// labelled with the pod's service, version, namespace, pod and SPIFFE
// identity, and spans of the client and of the server joined in one trace:
// the server's span is the child of the client's, so the W3C trace context
// crossed the hop (and a call carrying a traceparent of the test's own is
// traced as its child). The collector forwards the metrics to a real
// Prometheus (bin/prometheus, its OTLP receiver), where they carry the
// pods' labels, and every query of the chart's mesh dashboard that reads
// them returns data (those that read Envoy's stats cannot: no Envoy runs
// here).
func TestProxylessTelemetryReachesTheCollector(t *testing.T) {
	const serverIP = "192.0.2.51"
	if !testenv.InOwnNetworkNamespace(t, serverIP) {
		return
	}
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	otelcol := filepath.Join(root, "bin", "otelcol")
	if _, err := os.Stat(otelcol); err != nil {
		t.Fatalf("otelcol is missing (%v): run 'make tools' (hack/build-tools.sh otelcol)", err)
	}
	prometheusBin := tool(t, root, "prometheus")
	demo := testenv.Binary(t, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Prometheus takes the metrics the collector forwards over OTLP, with
	// the resource attributes weft gives workloads as labels, as
	// docs/operations.md ("Monitoring") sets it up.
	promDir := filepath.Join(dir, "prometheus")
	must(os.Mkdir(promDir, 0o755))
	prom := runPrometheus(t, prometheusBin, promDir, meshPrometheusConfig, "--web.enable-otlp-receiver")
	started := time.Now()
	collector, received := startCollector(ctx, t, otelcol, dir, prom.base+"/api/v1/otlp/v1/metrics")
	env, ads := startController(ctx, t)
	c := env.Client

	// The mesh: reviews (one pod, v1) and a caller, productpage.
	ns := "shop"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	must(c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}},
		Subsets: []meshv1.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}},
	}}))

	// The pods as the injector leaves them, with the mesh's collector for
	// traces (every trace sampled) and metrics; the API server takes them.
	cfg := inject.DefaultConfig()
	cfg.TracingEndpoint, cfg.TracingSampling, cfg.MetricsEndpoint = collector, 100, collector
	must(cfg.Validate())
	workloads := map[string]*workload{}
	for _, w := range []struct{ pod, sa, app string }{{"reviews-v1", "reviews", "reviews"}, {"productpage-v1", "productpage", "productpage"}} {
		must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: w.sa}}))
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: w.pod, Labels: map[string]string{"app": w.app, "version": "v1"},
				Annotations: map[string]string{inject.AnnotationProxy: string(wire.FlavourGRPC)}},
			Spec: corev1.PodSpec{ServiceAccountName: w.sa, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/" + w.app}}},
		}
		if d := inject.Decide(pod, ns, map[string]string{wire.LabelInject: "enabled"}, cfg); !d.Inject {
			t.Fatalf("%s: not injected: %s", w.pod, d.Reason)
		}
		must(inject.Inject(pod, cfg))
		must(c.Create(ctx, pod))
		workloads[w.pod] = podWorkload(ctx, t, c, pod, dir, ads)
		// The SDK exports every second instead of every minute, so that
		// Prometheus has several points of each series while calls go on.
		workloads[w.pod].env = append(workloads[w.pod].env, "OTEL_METRIC_EXPORT_INTERVAL=1000")
	}
	must(c.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "reviews-v1", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](9080)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{serverIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "reviews-v1"}}},
	}))

	// The server serves once weft's Listener for its address is in force;
	// the client calls it through the mesh until calls are answered.
	ready := filepath.Join(dir, "reviews-v1.serving")
	server := workloads["reviews-v1"].start(t, dir, demo, "serve", "-name", "reviews-v1", "-listen", net.JoinHostPort(serverIP, "9080"), "-ready-file", ready)
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		_, err := os.Stat(ready)
		return err
	}))
	clientOut := workloads["productpage-v1"].startClient(t, dir, demo, "-target", "reviews.shop.svc.cluster.local:9080", "-rate", "20", "-window", "250ms")
	answered := 0
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		for {
			select {
			case w, ok := <-clientOut:
				if !ok {
					return fmt.Errorf("the client stopped (its log: %s)", filepath.Join(dir, "productpage-v1.log"))
				}
				answered += w.Backends["reviews-v1"]
				if answered >= 10 {
					return nil
				}
			default:
				return fmt.Errorf("%d calls answered by reviews-v1 so far", answered)
			}
		}
	}))

	// While the client calls, Prometheus receives the server's call
	// metrics, labelled with its pod, several times over.
	serverCalls := `grpc_server_call_duration_seconds_count{job="reviews",service_version="v1",k8s_namespace_name="shop",` +
		`k8s_pod_name="reviews-v1",weft_identity="` + wire.SPIFFEID("cluster.local", ns, "reviews") + `",grpc_method="bookinfo.Service/Get",grpc_status="OK"}`
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		n, err := prom.query(ctx, "count_over_time("+serverCalls+"[5m])")
		if err != nil {
			return err
		}
		if n < 3 {
			return fmt.Errorf("%v points of %s", n, serverCalls)
		}
		return nil
	}))

	// A call of the test's own with a W3C traceparent: the server's span
	// must be its child.
	theirs := traceContext{traceID: "5eedf00d5eedf00d5eedf00d5eedf00d", spanID: "0123456789abcdef"}
	direct, err := grpc.NewClient(net.JoinHostPort(serverIP, "9080"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	callCtx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+theirs.traceID+"-"+theirs.spanID+"-01")
	var answer wrapperspb.StringValue
	must(direct.Invoke(callCtx, "/bookinfo.Service/Get", &emptypb.Empty{}, &answer))
	must(direct.Close())
	if answer.GetValue() != "reviews-v1" {
		t.Fatalf("the direct call was answered by %q", answer.GetValue())
	}

	// Stopped, each workload sends what it still holds.
	for _, p := range []*exec.Cmd{workloads["productpage-v1"].cmd, server} {
		must(stopProcess(p))
	}

	want := map[string]map[string]string{}
	for pod, sa := range map[string]string{"reviews-v1": "reviews", "productpage-v1": "productpage"} {
		app, _, _ := strings.Cut(pod, "-")
		want[pod] = map[string]string{"service.name": app, "service.version": "v1", "k8s.namespace.name": ns, "k8s.pod.name": pod,
			wire.AttributeIdentity: wire.SPIFFEID("cluster.local", ns, sa)}
	}
	var last error
	err = testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		got, err := received()
		if err != nil {
			return err
		}
		last = checkTelemetry(got, want, theirs)
		return last
	})
	if err != nil {
		t.Fatalf("the collector did not receive what the workloads should have sent: %v (collector's log: %s)", last, filepath.Join(dir, "otelcol.log"))
	}

	// Every query of the chart's mesh dashboard that reads the proxyless
	// workloads' metrics returns data from what this run sent.
	checkDashboardData(ctx, t, prom, "weft-mesh.json", started)
}

// meshPrometheusConfig is a Prometheus that scrapes nothing and keeps, as
// labels of what arrives over OTLP, the resource attributes weft's
// injector gives proxyless workloads: with k8s.pod.name, two pods of one
// service are two series.
const meshPrometheusConfig = `otlp:
  promote_resource_attributes: [k8s.namespace.name, k8s.pod.name, service.version, weft.identity]
`

// workload is a pod's process as the kubelet would start it: the
// container's environment from the injector, expanded.
type workload struct {
	name string
	env  []string
	cmd  *exec.Cmd
}

// podWorkload reads back a pod the injector changed and gives it the
// kubelet's expansion of its container's environment. The one difference
// is the xDS bootstrap: the injected one names files in the pod
// (/var/run/secrets/weft/...) and weft's authenticated port; the test's
// xDS server is plain text, so the workload gets a bootstrap file of the
// test's (GRPC_XDS_BOOTSTRAP) for its node id instead of
// GRPC_XDS_BOOTSTRAP_CONFIG. Every OTEL_ variable is the injector's.
func podWorkload(ctx context.Context, t *testing.T, c client.Client, pod *corev1.Pod, dir, ads string) *workload {
	t.Helper()
	stored := &corev1.Pod{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), stored); err != nil {
		t.Fatal(err)
	}
	vars, err := kubelet.Env(stored, stored.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	otel := 0
	for _, v := range vars {
		name, _, _ := strings.Cut(v, "=")
		switch {
		case name == "GRPC_XDS_BOOTSTRAP_CONFIG", name == "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS":
			continue
		case strings.HasPrefix(name, "OTEL_"):
			otel++
		}
		env = append(env, v)
	}
	if otel == 0 {
		t.Fatalf("pod %s: the injector gave no OTEL_ variable: %v", pod.Name, vars)
	}
	boot := filepath.Join(dir, pod.Name+".bootstrap.json")
	if err := os.WriteFile(boot, []byte(xdstest.Bootstrap(ads, wire.NodeID(pod.Name, pod.Namespace), xdstest.Certs{Dir: dir})), 0o644); err != nil {
		t.Fatal(err)
	}
	return &workload{name: pod.Name, env: append(env, "GRPC_XDS_BOOTSTRAP="+boot)}
}

// start runs the demo binary as the workload, its output in dir.
func (w *workload) start(t *testing.T, dir, demo string, args ...string) *exec.Cmd {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, w.name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	cmd := exec.Command(demo, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = w.env, log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.cmd = cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// clientWindow is one line of the demo client's report.
type clientWindow struct {
	Backends map[string]int `json:"backends"`
	Failed   int            `json:"failed"`
}

// startClient runs the demo's client as the workload and returns its
// reports, closed when it stops.
func (w *workload) startClient(t *testing.T, dir, demo string, args ...string) <-chan clientWindow {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, w.name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(demo, append([]string{"client"}, args...)...)
	cmd.Env, cmd.Stderr, cmd.Stdout = w.env, log, wr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	w.cmd = cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	out := make(chan clientWindow, 1024)
	go func() {
		defer close(out)
		defer r.Close()
		dec := json.NewDecoder(r)
		for {
			var cw clientWindow
			if err := dec.Decode(&cw); err != nil {
				return
			}
			select {
			case out <- cw:
			default: // nobody reads any more
			}
		}
	}()
	return out
}

// stopProcess stops a workload as a kubelet does (SIGTERM) and waits for it
// to exit, which it does only after sending its telemetry.
func stopProcess(cmd *exec.Cmd) error {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s exited: %w", cmd.Args[1], err)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return fmt.Errorf("%s did not exit within 30 s of SIGTERM", cmd.Args[1])
	}
}

// startCollector runs the OpenTelemetry collector from bin/ with an OTLP
// receiver (gRPC, on loopback) and the file exporter, forwarding metrics
// over OTLP/HTTP to metricsURL too, and returns the receiver's address and
// a function that reads what the collector wrote so far.
func startCollector(ctx context.Context, t *testing.T, otelcol, dir, metricsURL string) (string, func() (otlpFile, error)) {
	t.Helper()
	addr := "127.0.0.1:4317"
	out := filepath.Join(dir, "otel.jsonl")
	config := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
exporters:
  file:
    path: %s
    flush_interval: 100ms
  otlphttp/prometheus:
    metrics_endpoint: %s
    compression: none
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
    metrics: {receivers: [otlp], exporters: [file, otlphttp/prometheus]}
`, addr, out, metricsURL)
	cfgPath := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "otelcol.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(otelcol, "--config="+cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = log.Close()
	})
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("the collector does not listen on %s yet: %w", addr, err)
		}
		return conn.Close()
	}); err != nil {
		t.Fatal(err)
	}
	return addr, func() (otlpFile, error) { return readOTLP(out) }
}

// OTLP JSON as the file exporter writes it, one object per line: just the
// fields the test reads.
type otlpFile struct {
	Spans   []otlpResourceSpans
	Metrics []otlpResourceMetrics
}

type otlpAttr struct {
	Key   string `json:"key"`
	Value struct {
		StringValue string `json:"stringValue"`
	} `json:"value"`
}

type otlpResource struct {
	Attributes []otlpAttr `json:"attributes"`
}

type otlpResourceSpans struct {
	Resource   otlpResource `json:"resource"`
	ScopeSpans []struct {
		Spans []otlpSpan `json:"spans"`
	} `json:"scopeSpans"`
}

type otlpSpan struct {
	TraceID      string `json:"traceId"`
	SpanID       string `json:"spanId"`
	ParentSpanID string `json:"parentSpanId"`
	Name         string `json:"name"`
	Kind         int    `json:"kind"`
}

type otlpResourceMetrics struct {
	Resource     otlpResource `json:"resource"`
	ScopeMetrics []struct {
		Metrics []otlpMetric `json:"metrics"`
	} `json:"scopeMetrics"`
}

type otlpPoints struct {
	DataPoints []struct {
		Attributes []otlpAttr `json:"attributes"`
	} `json:"dataPoints"`
}

type otlpMetric struct {
	Name      string      `json:"name"`
	Histogram *otlpPoints `json:"histogram"`
	Sum       *otlpPoints `json:"sum"`
}

// attrs turns OTLP attributes into a map of their string values.
func attrs(as []otlpAttr) map[string]string {
	out := map[string]string{}
	for _, a := range as {
		out[a.Key] = a.Value.StringValue
	}
	return out
}

func readOTLP(path string) (otlpFile, error) {
	var f otlpFile
	raw, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("nothing from the collector yet: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			ResourceSpans   []otlpResourceSpans   `json:"resourceSpans"`
			ResourceMetrics []otlpResourceMetrics `json:"resourceMetrics"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return f, fmt.Errorf("a line the collector wrote: %w", err)
		}
		f.Spans = append(f.Spans, line.ResourceSpans...)
		f.Metrics = append(f.Metrics, line.ResourceMetrics...)
	}
	return f, sc.Err()
}

// traceContext names a span: its trace and its own id, in hex.
type traceContext struct{ traceID, spanID string }

// OTLP span kinds.
const (
	spanKindServer = 2
	spanKindClient = 3
)

// checkTelemetry says what of the expected telemetry the collector has
// not received: from each pod (by want's resource attributes), grpc-go's
// call metrics, the client's with the target and method, the server's
// with the method; and a client span whose child is a server span of the
// same trace (the server's span of a mesh call has the client's span as
// its parent), and a server span that is the child of theirs.
func checkTelemetry(got otlpFile, want map[string]map[string]string, theirs traceContext) error {
	of := func(res otlpResource) string {
		a := attrs(res.Attributes)
		for pod, w := range want {
			if a["k8s.pod.name"] == pod {
				for k, v := range w {
					if a[k] != v {
						return "" // the pod's, but not labelled as it should be
					}
				}
				return pod
			}
		}
		return ""
	}
	// Metrics: name -> attributes of its points, per pod.
	metrics := map[string]map[string][]map[string]string{}
	for _, rm := range got.Metrics {
		pod := of(rm.Resource)
		if pod == "" {
			continue
		}
		if metrics[pod] == nil {
			metrics[pod] = map[string][]map[string]string{}
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				for _, pts := range []*otlpPoints{m.Histogram, m.Sum} {
					if pts == nil {
						continue
					}
					for _, dp := range pts.DataPoints {
						metrics[pod][m.Name] = append(metrics[pod][m.Name], attrs(dp.Attributes))
					}
				}
			}
		}
	}
	hasPoint := func(pod, metric string, want map[string]string) bool {
		return slices.ContainsFunc(metrics[pod][metric], func(a map[string]string) bool {
			for k, v := range want {
				if a[k] != v {
					return false
				}
			}
			return true
		})
	}
	if !hasPoint("productpage-v1", "grpc.client.attempt.duration",
		map[string]string{"grpc.target": "xds:///reviews.shop.svc.cluster.local:9080", "grpc.method": "bookinfo.Service/Get", "grpc.status": "OK"}) {
		return fmt.Errorf("no grpc.client.attempt.duration of productpage-v1's calls to reviews, labelled %v (its metrics: %v)", want["productpage-v1"], metrics["productpage-v1"])
	}
	if !hasPoint("reviews-v1", "grpc.server.call.duration", map[string]string{"grpc.method": "bookinfo.Service/Get", "grpc.status": "OK"}) {
		return fmt.Errorf("no grpc.server.call.duration of reviews-v1's calls, labelled %v (its metrics: %v)", want["reviews-v1"], metrics["reviews-v1"])
	}

	// Spans, per pod.
	spans := map[string][]otlpSpan{}
	for _, rs := range got.Spans {
		if pod := of(rs.Resource); pod != "" {
			for _, ss := range rs.ScopeSpans {
				spans[pod] = append(spans[pod], ss.Spans...)
			}
		}
	}
	clientSpans := map[traceContext]otlpSpan{}
	for _, s := range spans["productpage-v1"] {
		clientSpans[traceContext{s.TraceID, s.SpanID}] = s
	}
	joined, adopted := false, false
	for _, s := range spans["reviews-v1"] {
		if s.Kind != spanKindServer || s.Name != "Recv.bookinfo.Service.Get" {
			continue
		}
		parent := traceContext{s.TraceID, s.ParentSpanID}
		if p, ok := clientSpans[parent]; ok {
			// grpc-go's client span is Sent.<method> (kind client); the
			// attempt that crossed the hop is its child.
			if c, ok := clientSpans[traceContext{p.TraceID, p.ParentSpanID}]; ok && c.Kind == spanKindClient && c.Name == "Sent.bookinfo.Service.Get" &&
				p.Name == "Attempt.bookinfo.Service.Get" {
				joined = true
			}
		}
		adopted = adopted || parent == theirs
	}
	if !joined {
		return fmt.Errorf("no server span of reviews-v1 whose parent is productpage-v1's attempt of a client call, in one trace (%d spans of the client, %d of the server)",
			len(spans["productpage-v1"]), len(spans["reviews-v1"]))
	}
	if !adopted {
		return fmt.Errorf("no server span of reviews-v1 with the test's traceparent (trace %s, parent %s) as its parent", theirs.traceID, theirs.spanID)
	}
	return nil
}

// docs/observability.md shows applications the demo's own OpenTelemetry
// set-up, which TestProxylessTelemetryReachesTheCollector runs: the block
// after its "tested" marker is the code between the markers in
// hack/demo/telemetry.go, line for line.
func TestObservabilityDocsShowTheTestedCode(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(root, "hack", "demo", "telemetry.go"))
	if err != nil {
		t.Fatal(err)
	}
	_, code, ok := strings.Cut(string(src), "// --- docs/observability.md: begin ---\n")
	code, _, ok2 := strings.Cut(code, "\t// --- docs/observability.md: end ---")
	if !ok || !ok2 {
		t.Fatal("hack/demo/telemetry.go lacks the markers around the code the docs show")
	}
	var want []string
	for l := range strings.SplitSeq(strings.TrimSuffix(code, "\n"), "\n") {
		want = append(want, strings.TrimPrefix(l, "\t"))
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "<!-- tested: hack/demo/telemetry.go -->\n```go\n")
	block, _, ok2 = strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("docs/observability.md lacks the tested block")
	}
	got := strings.Split(strings.TrimSuffix(block, "\n"), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("docs/observability.md shows:\n%s\nhack/demo/telemetry.go has:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
