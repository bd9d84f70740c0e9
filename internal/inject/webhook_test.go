package inject_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/golden"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

var (
	env *testenv.Env
	cfg = withCollectors(inject.DefaultConfig())
)

// withCollectors gives the mesh a trace and a metrics collector, so that
// the golden pods show the telemetry settings of proxyless workloads.
func withCollectors(c inject.Config) inject.Config {
	c.TracingEndpoint, c.TracingSampling = "otel-collector.observability.svc:4317", 5
	c.MetricsEndpoint = "otel-collector.observability.svc:4317"
	return c
}

const (
	meshed   = "meshed"
	unmeshed = "unmeshed"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// A fuzzing run (-fuzz, and the workers it starts) runs one fuzz
	// target, which needs no API server.
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

// run starts a real API server with weft's webhook configuration, and the
// webhook served by a controller-runtime manager, as in production.
func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.InfoLevel)))
	root, err := testenv.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if env, err = testenv.StartWith(testenv.Options{WebhookDirs: []string{filepath.Join(root, "config", "webhook")}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
		}
	}()
	host, port, certDir := env.WebhookServing()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          webhook.NewServer(webhook.Options{Host: host, Port: port, CertDir: certDir}),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgr.GetWebhookServer().Register(inject.WebhookPath, &webhook.Admission{Handler: &inject.Webhook{
		Namespaces: mgr.GetClient(), Decoder: admission.NewDecoder(env.Scheme), Config: cfg,
		Events: mgr.GetEventRecorder("weft-controller"),
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: meshed, Labels: map[string]string{wire.LabelInject: "enabled"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: unmeshed}},
	} {
		if err := env.Client.Create(ctx, ns); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// Wait until the webhook answers (a dry-run create goes through it).
	err = testenv.Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
		p := pod("probe-webhook")
		if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
			return err
		}
		if p.Annotations[inject.AnnotationInjected] == "" {
			return fmt.Errorf("not injected yet")
		}
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "the webhook never answered:", err)
		return 1
	}
	return m.Run()
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: meshed, Labels: map[string]string{"app": name}},
		// A real cluster's ServiceAccount admission plugin fills this in
		// before webhooks run; envtest's API server does not have it.
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/app:1.0",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
}

// injectionCase is a golden case: testdata/cases/<name>/ holds the pod as
// a user writes it (pod.yaml), what the injector must record on it
// (case.yaml) and the pod the API server stores (injected.yaml, the
// output).
type injectionCase struct {
	name string
	pod  *corev1.Pod
	// Injected is the flavour the injected annotation must name; empty
	// when the pod is left alone.
	Injected string `json:"injected"`
}

func cases(t testing.TB) []injectionCase {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("testdata", "cases", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases under testdata/cases: %v", err)
	}
	var out []injectionCase
	for _, dir := range dirs {
		c := injectionCase{name: filepath.Base(dir), pod: &corev1.Pod{}}
		for file, into := range map[string]any{"case.yaml": &c, "pod.yaml": c.pod} {
			b, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(b, into); err != nil {
				t.Fatalf("%s/%s: %v", dir, file, err)
			}
		}
		if c.pod.Name != c.name || c.pod.Namespace != meshed {
			t.Fatalf("%s/pod.yaml: the pod must be %s/%s", dir, meshed, c.name)
		}
		out = append(out, c)
	}
	return out
}

// normalized keeps what a golden file compares: labels, annotations, spec.
func normalized(p *corev1.Pod) []byte {
	out := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, Annotations: p.Annotations},
		Spec:       p.Spec,
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		panic(err)
	}
	return b
}

func TestInjectionThroughTheAPIServer(t *testing.T) {
	ctx := context.Background()
	for _, tc := range cases(t) {
		t.Run(tc.name, func(t *testing.T) {
			if err := env.Client.Create(ctx, tc.pod); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = env.Client.Delete(ctx, tc.pod, client.GracePeriodSeconds(0)) })
			stored := &corev1.Pod{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(tc.pod), stored); err != nil {
				t.Fatal(err)
			}
			if got := stored.Annotations[inject.AnnotationInjected]; got != tc.Injected {
				t.Fatalf("injected %q, want %q", got, tc.Injected)
			}
			golden.Dir(t, filepath.Join("testdata", "cases", tc.name), map[string][]byte{"injected.yaml": normalized(stored)}, "case.yaml", "pod.yaml")

			// Sent again (server-side dry run), an injected pod comes back
			// unchanged: the injector is idempotent and reinvocation-safe.
			again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
				Name: tc.pod.Name + "-again", Namespace: meshed, Labels: stored.Labels, Annotations: stored.Annotations,
			}, Spec: *stored.Spec.DeepCopy()}
			if err := env.Client.Create(ctx, again, client.DryRunAll); err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(again.Spec, stored.Spec) || !equality.Semantic.DeepEqual(again.Annotations, stored.Annotations) {
				t.Errorf("re-creating the injected pod changed it:\n%s", normalized(again))
			}
		})
	}
}

// Pods of namespaces that did not opt in are not sent to the webhook.
func TestUnlabelledNamespaceIsLeftAlone(t *testing.T) {
	p := pod("elsewhere")
	p.Namespace = unmeshed
	if err := env.Client.Create(context.Background(), p, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.InitContainers) != 0 || p.Annotations[inject.AnnotationInjected] != "" {
		t.Errorf("a pod in an unlabelled namespace was injected")
	}
}

// An invalid weft annotation is refused at admission, naming it.
func TestInvalidAnnotationIsRefused(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{inject.AnnotationExcludeInboundPorts, "80,abc", `annotation mesh.weft.dev/exclude-inbound-ports: "abc" is not a port`},
		{inject.AnnotationExcludeOutboundCIDRs, "10.0.0.0/33", "annotation mesh.weft.dev/exclude-outbound-cidrs"},
		{inject.AnnotationProxy, "linkerd", `annotation mesh.weft.dev/proxy: "linkerd" is not "envoy" or "grpc"`},
		{inject.AnnotationProxyCPULimit, "lots", "annotation mesh.weft.dev/proxy-cpu-limit"},
	} {
		p := pod("bad-annotation")
		p.Annotations = map[string]string{tc.key: tc.value}
		err := env.Client.Create(context.Background(), p, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: want refusal containing %q, got %v", tc.key, tc.value, tc.want, err)
		}
	}
}

// With pod-certificate delivery the pod gets a podCertificate projected
// volume for weft's signer, and the real API server accepts the result.
func TestPodCertificateDelivery(t *testing.T) {
	c := inject.DefaultConfig()
	c.CertDelivery = wire.DeliveryPodCertificate
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := pod("pod-certs")
	if d := inject.Decide(p, meshed, map[string]string{wire.LabelInject: "enabled"}, c); !d.Inject {
		t.Fatalf("not injected: %s", d.Reason)
	}
	if err := inject.Inject(p, c); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, v := range p.Spec.Volumes {
		if v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].PodCertificate != nil {
			found = v.Projected.Sources[0].PodCertificate.SignerName == c.PodCertificateSigner
		}
	}
	if !found {
		t.Fatal("no podCertificate volume for weft's signer")
	}
	golden.Check(t, "pod-certificates.golden.yaml", normalized(p))
	// The pod is already injected, so the webhook leaves it be; the API
	// server validates the projection.
	if err := env.Client.Create(context.Background(), p, client.DryRunAll); err != nil {
		t.Fatalf("the API server refused the injected pod: %v", err)
	}
}

// injections reads weft_injections_total for an outcome and reason from
// the registry the controller serves.
func injections(t *testing.T, outcome, reason string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "weft_injections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["outcome"] == outcome && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A pod the webhook leaves out of the mesh (here: it uses the host's
// network) is an InjectionSkipped Warning on its ReplicaSet, through the
// real API server, with the reason; a dry run records none; both answers
// count in weft_injections_total{outcome="skipped",reason="HostNetwork"}.
func TestSkippedInjectionIsAnEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := injections(t, "skipped", inject.ReasonHostNetwork)
	owned := func(name string) (*appsv1.ReplicaSet, *corev1.Pod) {
		labels := map[string]string{"app": name}
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: meshed, Name: name}, Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod(name).Spec},
		}}
		if err := env.Client.Create(ctx, rs); err != nil {
			t.Fatal(err)
		}
		p := pod(name + "-x1")
		p.Labels = labels
		p.Spec.HostNetwork = true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
		return rs, p
	}
	_, dry := owned("hostnet-dry")
	if err := env.Client.Create(ctx, dry, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	rs, p := owned("hostnet")
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.Annotations[inject.AnnotationInjected] != "" {
		t.Fatal("a pod on the host's network was injected")
	}
	var found eventsv1.Event
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := env.Client.List(ctx, &list, client.InNamespace(meshed)); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Reason == wire.EventInjectionSkipped && ev.Regarding.Name == "hostnet-dry" {
				return fmt.Errorf("a dry run recorded an Event: %s", ev.Note)
			}
		}
		for _, ev := range list.Items {
			if ev.Reason == wire.EventInjectionSkipped && ev.Regarding.Kind == "ReplicaSet" && ev.Regarding.Name == rs.Name {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("no InjectionSkipped Event on ReplicaSet %s among %d", rs.Name, len(list.Items))
	}); err != nil {
		t.Fatal(err)
	}
	if found.Type != corev1.EventTypeWarning || found.Regarding.UID != rs.UID || found.Regarding.APIVersion != "apps/v1" ||
		!strings.Contains(found.Note, "a pod of ReplicaSet hostnet was not injected: the pod uses the host's network") {
		t.Errorf("the Event: %s %s regarding %+v: %q", found.Type, found.Reason, found.Regarding, found.Note)
	}
	if got := injections(t, "skipped", inject.ReasonHostNetwork) - before; got != 2 {
		t.Errorf("weft_injections_total{outcome=skipped,reason=HostNetwork} moved by %v, want 2 (the dry run and the pod)", got)
	}
}
