package chart_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

// monitoringOn turns every monitoring object of the chart on.
var monitoringOn = []string{
	"monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true",
	"monitoring.prometheusRule.enabled=true", "monitoring.dashboards.enabled=true",
}

// prometheusOperatorCRDs is the directory of the Prometheus operator's
// CRDs (testdata).
func prometheusOperatorCRDs(root string) string {
	return filepath.Join(root, "test", "chart", "testdata", "prometheus-operator")
}

// alertGroups reads the groups of the chart's alerts file, as JSON values.
func alertGroups(t *testing.T) []any {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "charts", "weft", "files", "monitoring", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []any `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f.Groups
}

// alertNames lists the alerts of groups, in order.
func alertNames(groups []any) []string {
	var out []string
	for _, g := range groups {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			name, _ := r.(map[string]any)["alert"].(string)
			out = append(out, name)
		}
	}
	return out
}

// checkMonitoring checks the monitoring objects of a rendering with every
// one of them on: the ServiceMonitor scrapes the controller's metrics
// Service over HTTPS with a token from tokenSecret (the chart's own
// ServiceAccount, bound to weft-metrics-reader alone, when it is
// weft-metrics-scraper-token); the PodMonitor scrapes the port and path of
// the sidecar the injector adds; the PrometheusRule is the alerts file;
// each dashboard is a ConfigMap with the sidecar's label holding its file.
func checkMonitoring(tokenSecret string, objLabels map[string]string) func(*testing.T, []*unstructured.Unstructured) {
	return func(t *testing.T, objs []*unstructured.Unstructured) {
		sm := find(objs, "ServiceMonitor", "weft-controller")
		if sm == nil {
			t.Fatal("no ServiceMonitor")
		}
		for k, v := range objLabels {
			if sm.GetLabels()[k] != v {
				t.Errorf("the ServiceMonitor's labels %v lack %s=%s", sm.GetLabels(), k, v)
			}
		}
		// It selects the metrics Service, and that one alone.
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		for _, o := range objs {
			if o.GetKind() == "Service" {
				selected := labels.SelectorFromSet(sel).Matches(labels.Set(o.GetLabels()))
				if selected != (o.GetName() == "weft-controller-metrics") {
					t.Errorf("the ServiceMonitor's selector %v selects Service %s: %v", sel, o.GetName(), selected)
				}
			}
		}
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(eps) != 1 {
			t.Fatalf("ServiceMonitor endpoints %v", eps)
		}
		ep := eps[0].(map[string]any)
		metricsSvc := typed[corev1.Service](t, find(objs, "Service", "weft-controller-metrics"))
		skip, _, _ := unstructured.NestedBool(ep, "tlsConfig", "insecureSkipVerify")
		secret, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name")
		key, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "key")
		if ep["port"] != metricsSvc.Spec.Ports[0].Name || ep["scheme"] != "https" || ep["path"] != "/metrics" || !skip ||
			secret != tokenSecret || key != "token" {
			t.Errorf("ServiceMonitor endpoint %v: want HTTPS on port %s, /metrics, the token of Secret %s", ep, metricsSvc.Spec.Ports[0].Name, tokenSecret)
		}
		own := find(objs, "Secret", "weft-metrics-scraper-token")
		if (own != nil) != (tokenSecret == "weft-metrics-scraper-token") {
			t.Errorf("the chart's token Secret is rendered: %v, with tokenSecret %s", own != nil, tokenSecret)
		}
		if own != nil {
			s := typed[corev1.Secret](t, own)
			if s.Type != corev1.SecretTypeServiceAccountToken || s.Annotations[corev1.ServiceAccountNameKey] != "weft-metrics-scraper" {
				t.Errorf("token Secret %+v", s.ObjectMeta)
			}
			b := typed[rbacv1.ClusterRoleBinding](t, find(objs, "ClusterRoleBinding", "weft-metrics-scraper"))
			if b.RoleRef.Name != "weft-metrics-reader" || len(b.Subjects) != 1 || b.Subjects[0].Name != "weft-metrics-scraper" ||
				b.Subjects[0].Namespace != releaseNamespace {
				t.Errorf("the scraper's binding %+v", b)
			}
		}

		// The PodMonitor scrapes what the injector serves the stats on.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		if err := inject.Inject(pod, inject.DefaultConfig()); err != nil {
			t.Fatal(err)
		}
		var statsPort string
		for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
			for _, p := range c.Ports {
				if p.ContainerPort == wire.PortStats {
					statsPort = p.Name
				}
			}
		}
		pm := find(objs, "PodMonitor", "weft-sidecars")
		if pm == nil {
			t.Fatal("no PodMonitor")
		}
		pes, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
		if len(pes) != 1 || statsPort == "" || pes[0].(map[string]any)["port"] != statsPort ||
			pes[0].(map[string]any)["path"] != pod.Annotations["prometheus.io/path"] {
			t.Errorf("PodMonitor endpoints %v: want the injected sidecar's port %q and path %q", pes, statsPort, pod.Annotations["prometheus.io/path"])
		}

		// The PrometheusRule carries the alerts file.
		pr := find(objs, "PrometheusRule", "weft")
		if pr == nil {
			t.Fatal("no PrometheusRule")
		}
		if got, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups"); !reflect.DeepEqual(jsonValue(t, got), jsonValue(t, alertGroups(t))) {
			t.Error("the PrometheusRule's groups are not those of files/monitoring/alerts.yaml")
		}

		// Each dashboard file, in a ConfigMap of its own.
		root, err := testenv.Root()
		if err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(root, "charts", "weft", "files", "monitoring", "dashboards", "*.json"))
		if len(files) != 2 {
			t.Errorf("dashboards %v, want the mesh's and the control plane's", files)
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Base(f)
			cm := typed[corev1.ConfigMap](t, find(objs, "ConfigMap", name[:len(name)-len(".json")]+"-dashboard"))
			// The template's block scalar (|-) drops the file's final
			// line breaks; everything else must arrive unchanged.
			text := strings.TrimRight(string(raw), "\n")
			if cm.Data[name] != text || cm.Labels["grafana_dashboard"] != "1" {
				t.Errorf("ConfigMap of %s: labels %v, the file's text: %v", name, cm.Labels, cm.Data[name] == text)
			}
		}
	}
}

// jsonValue is v as JSON decodes it, for comparing values decoded from
// YAML in different ways.
func jsonValue(t *testing.T, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPrometheusRuleIsTheAlertsFile: the chart's PrometheusRule holds the
// groups of files/monitoring/alerts.yaml, the file promtool tests
// (test/monitoring_test.go), as they are; monitoring.prometheusRule
// .disabledAlerts leaves out the alerts it names and nothing else; and the
// schema takes exactly the alerts of the file there.
func TestPrometheusRuleIsTheAlertsFile(t *testing.T) {
	tl := newTools(t, env)
	want := alertGroups(t)
	rule := func(set ...string) []any {
		t.Helper()
		pr := find(decode(t, tl.mustRender(t, append([]string{"monitoring.prometheusRule.enabled=true"}, set...)...)), "PrometheusRule", "weft")
		if pr == nil {
			t.Fatal("no PrometheusRule")
		}
		groups, _, err := unstructured.NestedSlice(pr.Object, "spec", "groups")
		if err != nil {
			t.Fatal(err)
		}
		return groups
	}
	if got := rule(); !reflect.DeepEqual(jsonValue(t, got), jsonValue(t, want)) {
		t.Errorf("the PrometheusRule's groups differ from files/monitoring/alerts.yaml:\n got %v\nwant %v", got, want)
	}
	all := alertNames(want)
	left := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == "WeftSeveralLeaders" || n == "WeftProxiesStale" })
	if got := alertNames(rule("monitoring.prometheusRule.disabledAlerts={WeftSeveralLeaders,WeftProxiesStale}")); !slices.Equal(got, left) {
		t.Errorf("with two alerts disabled the PrometheusRule has %v, want %v", got, left)
	}

	raw, err := os.ReadFile(filepath.Join(tl.chartDir(), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Monitoring struct {
				Properties struct {
					PrometheusRule struct {
						Properties struct {
							DisabledAlerts struct {
								Items struct {
									Enum []string `json:"enum"`
								} `json:"items"`
							} `json:"disabledAlerts"`
						} `json:"properties"`
					} `json:"prometheusRule"`
				} `json:"properties"`
			} `json:"monitoring"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	if got := schema.Properties.Monitoring.Properties.PrometheusRule.Properties.DisabledAlerts.Items.Enum; !slices.Equal(got, all) {
		t.Errorf("the schema's monitoring.prometheusRule.disabledAlerts takes %v; the alerts are %v", got, all)
	}
}

// checkMonitoringLive checks, after a helm upgrade that turned monitoring
// on, each monitoring object of the release through the API server: every
// field the chart sets is there as set (the operator's CRDs pruned none),
// and the scraper's ServiceAccount may GET /metrics and nothing else.
func checkMonitoringLive(ctx context.Context, t *testing.T, e *testenv.Env, tl *tools) {
	t.Helper()
	manifest := decode(t, tl.mustHelm(t, "get", "manifest", "weft", "--namespace", releaseNamespace))
	kinds := map[string]int{}
	for _, o := range manifest {
		switch o.GetKind() {
		case "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "Secret":
		case "ServiceAccount", "ClusterRoleBinding":
			if o.GetName() != "weft-metrics-scraper" {
				continue
			}
		default:
			continue
		}
		kinds[o.GetKind()]++
		got, err := live(ctx, e, o)
		if err != nil {
			t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
			continue
		}
		for _, d := range drift(o, got, nil) {
			t.Error(d)
		}
	}
	for kind, n := range map[string]int{"ServiceMonitor": 1, "PodMonitor": 1, "PrometheusRule": 1, "ConfigMap": 2, "Secret": 1, "ServiceAccount": 1, "ClusterRoleBinding": 1} {
		if kinds[kind] < n {
			t.Errorf("the release has %d %s of the monitoring objects, want %d", kinds[kind], kind, n)
		}
	}
	scraper := "system:serviceaccount:" + releaseNamespace + ":weft-metrics-scraper"
	for _, tc := range []struct {
		attrs authorizationv1.SubjectAccessReviewSpec
		want  bool
	}{
		{authorizationv1.SubjectAccessReviewSpec{User: scraper, NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"}}, true},
		{authorizationv1.SubjectAccessReviewSpec{User: scraper, NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/api", Verb: "get"}}, false},
		{authorizationv1.SubjectAccessReviewSpec{User: scraper, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: releaseNamespace, Verb: "get", Resource: "secrets"}}, false},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: tc.attrs}
		if err := e.Client.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tc.want {
			t.Errorf("the scraper's %+v %+v: allowed %v, want %v", tc.attrs.NonResourceAttributes, tc.attrs.ResourceAttributes, sar.Status.Allowed, tc.want)
		}
	}
}

// checkMonitoringGone checks that the monitoring objects left with the
// rollback to a revision without them.
func checkMonitoringGone(ctx context.Context, t *testing.T, e *testenv.Env) {
	t.Helper()
	for _, o := range []client.Object{
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"}},
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor"}},
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule"}},
		&corev1.ServiceAccount{},
	} {
		name := map[string]string{"ServiceMonitor": "weft-controller", "PodMonitor": "weft-sidecars", "PrometheusRule": "weft"}[o.GetObjectKind().GroupVersionKind().Kind]
		if name == "" {
			name = "weft-metrics-scraper"
		}
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: name}, o); !apierrors.IsNotFound(err) {
			t.Errorf("after the rollback %T %s: %v, want it gone", o, name, err)
		}
	}
}
