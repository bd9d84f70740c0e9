package inject

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/wire"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
		Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

// The same pod injected twice gives byte-identical specs, and the rendered
// bootstrap passes Envoy's own validation (ValidateAll).
func TestInjectIsDeterministic(t *testing.T) {
	a := testPod()
	if err := Inject(a, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		b := testPod()
		if err := Inject(b, DefaultConfig()); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(a, b) {
			t.Fatal("two injections of the same pod differ")
		}
	}
	if _, err := Bootstrap(DefaultConfig(), Workload{Service: "app", Version: "v1"}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDecideOrder(t *testing.T) {
	cfg := DefaultConfig()
	on := map[string]string{wire.LabelInject: "enabled"}
	host := testPod()
	host.Spec.HostNetwork = true
	out := testPod()
	out.Labels = map[string]string{wire.LabelInject: "false"}
	done := testPod()
	if err := Inject(done, cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		ns     string
		labels map[string]string
		code   string
		reason string
	}{
		{"kube-system", testPod(), "kube-system", on, ReasonSystemNamespace, "never injected"},
		{"mesh namespace", testPod(), "weft-system", on, ReasonSystemNamespace, "never injected"},
		{"not opted in", testPod(), "shop", nil, ReasonNamespaceNotMesh, "does not have the label"},
		{"opted out", out, "shop", on, ReasonOptedOut, "inject=false"},
		{"host network", host, "shop", on, ReasonHostNetwork, "host's network"},
		{"already injected", done, "shop", on, ReasonAlreadyInjected, "already injected"},
		{"injected", testPod(), "shop", on, "", ""},
	} {
		d := Decide(tc.pod, tc.ns, tc.labels, cfg)
		if d.Inject != (tc.reason == "") || d.Code != tc.code || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s: got %+v, want code %q and reason containing %q", tc.name, d, tc.code, tc.reason)
		}
		if d.Meshless() != (tc.code != "" && tc.code != ReasonAlreadyInjected) {
			t.Errorf("%s: Meshless() is %v", tc.name, d.Meshless())
		}
	}
}

// Every annotation error names its annotation, and all are reported at
// once; the pod is left untouched.
func TestAnnotationErrors(t *testing.T) {
	p := testPod()
	p.Annotations = map[string]string{
		AnnotationExcludeInboundPorts: "80,x", AnnotationProxyMemoryRequest: "1Gi", AnnotationProxyMemoryLimit: "128Mi",
		AnnotationProxyImage: "",
	}
	before := p.DeepCopy()
	err := Inject(p, DefaultConfig())
	if err == nil {
		t.Fatal("invalid annotations accepted")
	}
	for _, w := range []string{AnnotationExcludeInboundPorts, "memory request 1Gi exceeds its limit 128Mi", AnnotationProxyImage} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
	if !equality.Semantic.DeepEqual(before, p) {
		t.Error("a refused pod was changed")
	}
}

func BenchmarkInject(b *testing.B) {
	cfg := DefaultConfig()
	for b.Loop() {
		p := testPod()
		if err := Inject(p, cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// envOf returns a container's variables by name; a name set twice fails.
func envOf(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range c.Env {
		if _, dup := out[e.Name]; dup {
			t.Fatalf("container %s sets %s twice", c.Name, e.Name)
		}
		out[e.Name] = e.Value
	}
	return out
}

// A proxyless pod gets the OpenTelemetry SDK's environment: its service
// and version from its labels, its namespace, pod and SPIFFE identity as
// resource attributes (the kubelet expands the downward API variables),
// W3C trace context, and the mesh's collectors with the mesh-wide
// sampling; a signal without a collector has its exporter off, and what
// the container sets itself is kept.
func TestTelemetryEnvironment(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TracingEndpoint, cfg.TracingSampling, cfg.MetricsEndpoint = "collector.obs.svc:4317", 2.5, "metrics.obs.svc:4317"
	p := testPod()
	p.Labels = map[string]string{"app.kubernetes.io/name": "reviews", "app": "ignored", "version": "v2"}
	p.Annotations = map[string]string{AnnotationProxy: "grpc"}
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "own", Image: "app",
		Env: []corev1.EnvVar{{Name: "OTEL_SERVICE_NAME", Value: "mine"}, {Name: "OTEL_TRACES_SAMPLER", Value: "always_on"}}})
	if err := Inject(p, cfg); err != nil {
		t.Fatal(err)
	}
	env := envOf(t, p.Spec.Containers[0])
	for k, want := range map[string]string{
		"OTEL_SERVICE_NAME":                   "reviews",
		"OTEL_RESOURCE_ATTRIBUTES":            "k8s.namespace.name=$(WEFT_POD_NAMESPACE),k8s.pod.name=$(WEFT_POD_NAME),service.version=v2,weft.identity=spiffe://cluster.local/ns/$(WEFT_POD_NAMESPACE)/sa/$(WEFT_SERVICE_ACCOUNT)",
		"OTEL_PROPAGATORS":                    "tracecontext",
		"OTEL_EXPORTER_OTLP_PROTOCOL":         "grpc",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":  "http://collector.obs.svc:4317",
		"OTEL_TRACES_SAMPLER":                 "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":             "0.025",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics.obs.svc:4317",
		"OTEL_LOGS_EXPORTER":                  "none",
	} {
		if env[k] != want {
			t.Errorf("%s=%q, want %q", k, env[k], want)
		}
	}
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"} {
		if _, set := env[k]; set {
			t.Errorf("%s is set though the mesh has a collector for it", k)
		}
	}
	// The downward API variables the values refer to come first.
	names := make([]string, 0, len(p.Spec.Containers[0].Env))
	for _, e := range p.Spec.Containers[0].Env {
		names = append(names, e.Name)
	}
	if i, j := slices.Index(names, "WEFT_SERVICE_ACCOUNT"), slices.Index(names, "OTEL_RESOURCE_ATTRIBUTES"); i < 0 || j < i {
		t.Errorf("OTEL_RESOURCE_ATTRIBUTES comes before the variables it expands: %v", names)
	}
	own := envOf(t, p.Spec.Containers[1])
	if own["OTEL_SERVICE_NAME"] != "mine" || own["OTEL_TRACES_SAMPLER"] != "always_on" || own["OTEL_PROPAGATORS"] != "tracecontext" {
		t.Errorf("the container's own settings were not kept beside weft's: %v", own)
	}

	// No collectors, no labels: exporters off, no service name.
	bare := testPod()
	bare.Annotations = map[string]string{AnnotationProxy: "grpc"}
	if err := Inject(bare, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	env = envOf(t, bare.Spec.Containers[0])
	for k, want := range map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
		"OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=$(WEFT_POD_NAMESPACE),k8s.pod.name=$(WEFT_POD_NAME),weft.identity=spiffe://cluster.local/ns/$(WEFT_POD_NAMESPACE)/sa/$(WEFT_SERVICE_ACCOUNT)"} {
		if env[k] != want {
			t.Errorf("without collectors: %s=%q, want %q", k, env[k], want)
		}
	}
	for _, k := range []string{"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER"} {
		if _, set := env[k]; set {
			t.Errorf("without collectors or labels: %s is set", k)
		}
	}

	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.TracingEndpoint = "collector" }, "--tracing-endpoint"},
		{func(c *Config) { c.MetricsEndpoint = "collector:70000" }, "--metrics-endpoint"},
		{func(c *Config) { c.MetricsEndpoint = "http://collector:4317" }, "--metrics-endpoint"},
		{func(c *Config) { c.TracingSampling = -1 }, "--tracing-sampling"},
	} {
		bad := DefaultConfig()
		c.mod(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", bad, err, c.want)
		}
	}
}

// A sidecar's bootstrap tags every stat with its pod's namespace and
// identity, and with the service and version its labels give (none when
// they give none), and carries the destination extractors; Envoy's own
// default tags stay on.
func TestStatsTags(t *testing.T) {
	for _, tc := range []struct {
		w    Workload
		want map[string]string
	}{
		{Workload{Service: "reviews", Version: "v2"}, map[string]string{
			wire.StatTagNamespace: "$(WEFT_POD_NAMESPACE)", wire.StatTagIdentity: "spiffe://cluster.local/ns/$(WEFT_POD_NAMESPACE)/sa/$(WEFT_SERVICE_ACCOUNT)",
			wire.StatTagService: "reviews", wire.StatTagVersion: "v2"}},
		{Workload{}, map[string]string{
			wire.StatTagNamespace: "$(WEFT_POD_NAMESPACE)", wire.StatTagIdentity: "spiffe://cluster.local/ns/$(WEFT_POD_NAMESPACE)/sa/$(WEFT_SERVICE_ACCOUNT)"}},
	} {
		b, err := Bootstrap(DefaultConfig(), tc.w, nil)
		if err != nil {
			t.Fatal(err)
		}
		fixed, regex := map[string]string{}, map[string]string{}
		for _, s := range b.GetStatsConfig().GetStatsTags() {
			if _, dup := fixed[s.TagName]; dup {
				t.Fatalf("tag %s twice (Envoy refuses that)", s.TagName)
			}
			if _, dup := regex[s.TagName]; dup {
				t.Fatalf("tag %s twice (Envoy refuses that)", s.TagName)
			}
			if s.GetRegex() != "" {
				regex[s.TagName] = s.GetRegex()
			} else {
				fixed[s.TagName] = s.GetFixedValue()
			}
		}
		if !maps.Equal(fixed, tc.want) {
			t.Errorf("%+v: fixed tags %v, want %v", tc.w, fixed, tc.want)
		}
		for _, d := range wire.DestinationStatTags() {
			if regex[d.Name] != d.Regex {
				t.Errorf("%+v: tag %s has regex %q, want %q", tc.w, d.Name, regex[d.Name], d.Regex)
			}
		}
		if !b.GetStatsConfig().GetUseAllDefaultTags().GetValue() {
			t.Error("Envoy's default tags are off")
		}
	}
	if WorkloadOf(map[string]string{"app": "ratings", "app.kubernetes.io/version": "1.2", "version": "v1"}) != (Workload{Service: "ratings", Version: "1.2"}) {
		t.Error("labels read in the wrong order")
	}
}

// The delivery a pod is injected with travels in its proxy's node
// metadata, in both bootstraps: the xDS server serves the proxy by it,
// whatever the controller's delivery is later. A proxyless bootstrap
// names the certificate provider that weft's TLS names exactly when the
// pod has pod certificates.
func TestDeliveryInNodeMetadata(t *testing.T) {
	for _, d := range []wire.CertDelivery{wire.DeliverySDS, wire.DeliveryPodCertificate} {
		cfg := DefaultConfig()
		cfg.CertDelivery = d
		envoy := testPod()
		if err := Inject(envoy, cfg); err != nil {
			t.Fatal(err)
		}
		var boot struct {
			Node struct {
				Metadata map[string]string `json:"metadata"`
			} `json:"node"`
			CertificateProviders map[string]any `json:"certificate_providers"`
		}
		for _, c := range envoy.Spec.InitContainers {
			if i := slices.Index(c.Args, "--config-yaml"); i >= 0 {
				if err := json.Unmarshal([]byte(c.Args[i+1]), &boot); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := boot.Node.Metadata; got[wire.MetaCertDelivery] != string(d) || got[wire.MetaFlavour] != string(wire.FlavourEnvoy) {
			t.Errorf("%s: the Envoy bootstrap's node metadata is %v", d, got)
		}

		grpc := testPod()
		grpc.Annotations = map[string]string{AnnotationProxy: string(wire.FlavourGRPC)}
		if err := Inject(grpc, cfg); err != nil {
			t.Fatal(err)
		}
		boot.Node.Metadata, boot.CertificateProviders = nil, nil
		i := slices.IndexFunc(grpc.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == "GRPC_XDS_BOOTSTRAP_CONFIG" })
		if i < 0 {
			t.Fatalf("%s: no proxyless bootstrap", d)
		}
		if err := json.Unmarshal([]byte(grpc.Spec.Containers[0].Env[i].Value), &boot); err != nil {
			t.Fatal(err)
		}
		if got := boot.Node.Metadata; got[wire.MetaCertDelivery] != string(d) || got[wire.MetaFlavour] != string(wire.FlavourGRPC) {
			t.Errorf("%s: the proxyless bootstrap's node metadata is %v", d, got)
		}
		if _, ok := boot.CertificateProviders[wire.CertProviderInstance]; ok != (d == wire.DeliveryPodCertificate) {
			t.Errorf("%s: the proxyless bootstrap names certificate providers %v", d, boot.CertificateProviders)
		}
	}
}

// The sidecar takes every regex a policy weft accepts may hold: the RE2
// program size limit of its runtime is as high as Envoy reads it, not
// Envoy's default of 100, which "[a-z]{200}" alone exceeds.
func TestRegexProgramSizeLimit(t *testing.T) {
	b, err := Bootstrap(DefaultConfig(), Workload{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	layers := b.GetLayeredRuntime().GetLayers()
	if len(layers) != 1 {
		t.Fatalf("%d runtime layers, want one static layer", len(layers))
	}
	got := layers[0].GetStaticLayer().GetFields()["re2.max_program_size.error_level"].GetNumberValue()
	if got != 4294967295 {
		t.Fatalf("re2.max_program_size.error_level is %v, want 4294967295", got)
	}
}
