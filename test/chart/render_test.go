package chart_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/internal/wire"
)

func TestHelmLintStrict(t *testing.T) {
	tl := newTools(t, env)
	out, err := tl.helm("lint", "--strict", tl.chartDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "0 chart(s) failed") || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
		t.Fatalf("helm lint --strict:\n%s", out)
	}
}

// toggles are the documented values a user may change, each rendered,
// applied to the real API server with a server-side dry run (admission,
// schemas, cert-manager's CRDs) and checked for what it promises.
var toggles = []struct {
	name  string
	set   []string
	check func(t *testing.T, objs []*unstructured.Unstructured)
}{
	{"defaults", nil, checkDefaults},
	{"injector with a self-signed cert-manager issuer", []string{"injector.enabled=true", "certManager.enabled=true"}, checkInjector("Issuer", "weft-selfsigned")},
	{"injector with the user's ClusterIssuer", []string{
		"injector.enabled=true", "certManager.enabled=true", "certManager.issuerRef.name=corp-ca",
		"certManager.issuerRef.kind=ClusterIssuer", "injector.excludeNamespaces={legacy}", "injector.timeoutSeconds=3",
	}, checkInjector("ClusterIssuer", "corp-ca")},
	{"access logs, tracing, sidecar resources", []string{"mesh.accessLog.format=%START_TIME% %REQ(:PATH)%: %RESPONSE_CODE%",
		"mesh.tracing.endpoint=otel-collector.observability.svc:4317", "mesh.tracing.samplingPercent=5",
		"mesh.metrics.endpoint=metrics-collector.observability.svc:4317",
		"mesh.proxy.resources.requests.cpu=50m", "mesh.proxy.resources.limits.memory=1Gi"}, func(t *testing.T, objs []*unstructured.Unstructured) {
		args := controllerArgs(t, objs)
		for _, want := range []string{"--access-log-format=%START_TIME% %REQ(:PATH)%: %RESPONSE_CODE%",
			"--tracing-endpoint=otel-collector.observability.svc:4317", "--tracing-sampling=5",
			"--metrics-endpoint=metrics-collector.observability.svc:4317",
			"--proxy-requests=cpu=50m,memory=128Mi", "--proxy-limits=memory=1Gi"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %v lack %s", args, want)
			}
		}
	}},
	{"mesh CA from cert-manager", []string{"mesh.ca.source=certManager", "mesh.ca.issuerRef.name=corp-ca"}, func(t *testing.T, objs []*unstructured.Unstructured) {
		cert := find(objs, "Certificate", "weft-mesh-ca")
		if cert == nil {
			t.Fatal("no Certificate for the mesh CA")
		}
		spec, _, _ := unstructured.NestedMap(cert.Object, "spec")
		ref, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
		enc, _, _ := unstructured.NestedString(cert.Object, "spec", "privateKey", "encoding")
		if spec["secretName"] != "weft-root-ca" || spec["isCA"] != true || ref["name"] != "corp-ca" || ref["kind"] != "ClusterIssuer" || enc != "PKCS8" {
			t.Errorf("the mesh CA's Certificate: %v", spec)
		}
		if !slices.Contains(controllerArgs(t, objs), "--ca=external") {
			t.Errorf("the controller makes its own root: %v", controllerArgs(t, objs))
		}
		role := typed[rbacv1.Role](t, find(objs, "Role", "weft-controller"))
		if slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.Resources, "secrets") && slices.Contains(r.Verbs, "create")
		}) {
			t.Error("with cert-manager's CA the controller may still create Secrets")
		}
	}},
	{"every certificate from a cert-manager issuer", []string{"mesh.ca.source=certManagerIssuer", "mesh.ca.issuerRef.name=vault",
		"mesh.ca.issuerRef.kind=VaultIssuer", "mesh.ca.issuerRef.group=vault.example.com", "mesh.ca.trustBundle=corp-roots"}, func(t *testing.T, objs []*unstructured.Unstructured) {
		if find(objs, "Certificate", "weft-mesh-ca") != nil {
			t.Error("an intermediate CA is rendered although weft holds none")
		}
		args := controllerArgs(t, objs)
		for _, want := range []string{"--ca=cert-manager", "--issuer-name=vault", "--issuer-kind=VaultIssuer", "--issuer-group=vault.example.com",
			"--trust-bundle=corp-roots", "--issuer-qps=5", "--issuer-burst=20"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %v lack %s", args, want)
			}
		}
		role := typed[rbacv1.Role](t, find(objs, "Role", "weft-controller"))
		var requests int
		for _, r := range role.Rules {
			if slices.Contains(r.Resources, "secrets") {
				t.Errorf("the controller may still %v Secrets, and holds no CA", r.Verbs)
			}
			if slices.Contains(r.Resources, "certificaterequests") {
				requests++
				if !slices.Equal(r.APIGroups, []string{"cert-manager.io"}) || !slices.Equal(r.Verbs, []string{"create", "get", "delete"}) {
					t.Errorf("the CertificateRequest grant is %v on %v, want create, get, delete on cert-manager.io", r.Verbs, r.APIGroups)
				}
			}
		}
		if requests != 1 {
			t.Errorf("%d grants on CertificateRequests, want one", requests)
		}
		if slices.ContainsFunc(typed[rbacv1.ClusterRole](t, find(objs, "ClusterRole", "weft-controller")).Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.Resources, "certificaterequests") || slices.Contains(r.APIGroups, "certificates.k8s.io")
		}) {
			t.Error("the ClusterRole grants CertificateRequests cluster-wide, or pod certificates weft cannot sign")
		}
	}},
	{"no injector", []string{"injector.enabled=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
		if find(objs, "MutatingWebhookConfiguration", "weft-injector") != nil {
			t.Error("the injector is rendered although injector.enabled=false")
		}
		if args := controllerArgs(t, objs); !slices.Contains(args, "--webhook-port=0") {
			t.Errorf("args %v: the webhook server runs with the injector off", args)
		}
		svc := typed[corev1.Service](t, find(objs, "Service", "weft-controller"))
		if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != 15012 || svc.Spec.Ports[1].Port != 15014 {
			t.Errorf("weft-controller ports %+v, want xDS on 15012 and drains on 15014 only", svc.Spec.Ports)
		}
		if slices.ContainsFunc(typed[rbacv1.ClusterRole](t, find(objs, "ClusterRole", "weft-controller")).Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.Resources, "mutatingwebhookconfigurations")
		}) {
			t.Error("the ClusterRole lets weft patch a webhook configuration that is not installed")
		}
	}},
	{"cert-manager without the injector", []string{"injector.enabled=false", "certManager.enabled=true"}, func(t *testing.T, objs []*unstructured.Unstructured) {
		if find(objs, "MutatingWebhookConfiguration", "weft-injector") != nil {
			t.Error("the injector is rendered although injector.enabled=false")
		}
		if find(objs, "Certificate", "weft-webhook") != nil {
			t.Error("a serving certificate is issued for an injector that is off")
		}
	}},
	{"monitoring: monitors, alerts and dashboards", append(slices.Clone(monitoringOn),
		"monitoring.serviceMonitor.labels.release=prometheus", "monitoring.prometheusRule.labels.release=prometheus"),
		checkMonitoring("weft-metrics-scraper-token", map[string]string{"release": "prometheus"})},
	{"monitoring with the user's token Secret and dashboard settings", append(slices.Clone(monitoringOn),
		"monitoring.serviceMonitor.tokenSecret.name=prometheus-weft-token", "monitoring.serviceMonitor.interval=1m",
		"monitoring.podMonitor.namespaceSelector.any=false", "monitoring.podMonitor.namespaceSelector.matchNames={shop}",
		"monitoring.podMonitor.selector.matchLabels.team=shop", "monitoring.dashboards.annotations.grafana_folder=Mesh"),
		func(t *testing.T, objs []*unstructured.Unstructured) {
			checkMonitoring("prometheus-weft-token", nil)(t, objs)
			if find(objs, "ServiceAccount", "weft-metrics-scraper") != nil || find(objs, "ClusterRoleBinding", "weft-metrics-scraper") != nil {
				t.Error("the chart's scraper identity is rendered although the user gives the token")
			}
			pm := find(objs, "PodMonitor", "weft-sidecars")
			names, _, _ := unstructured.NestedStringSlice(pm.Object, "spec", "namespaceSelector", "matchNames")
			team, _, _ := unstructured.NestedString(pm.Object, "spec", "selector", "matchLabels", "team")
			if !slices.Equal(names, []string{"shop"}) || team != "shop" {
				t.Errorf("PodMonitor spec %v", pm.Object["spec"])
			}
			if cm := find(objs, "ConfigMap", "weft-mesh-dashboard"); cm.GetAnnotations()["grafana_folder"] != "Mesh" {
				t.Errorf("dashboard annotations %v", cm.GetAnnotations())
			}
		}},
	{"no CRDs", []string{"crds.install=false"}, nil},
	{"CRDs not kept", []string{"crds.keep=false"}, nil},
	{"no xDS, no metrics", []string{"xds.enabled=false", "metrics.enabled=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
		args := controllerArgs(t, objs)
		if !slices.Contains(args, "--metrics-bind-address=0") || slices.ContainsFunc(args, hasPrefix("--xds-bind-address")) {
			t.Errorf("args %v", args)
		}
		if find(objs, "Service", "weft-controller-metrics") != nil {
			t.Error("Service weft-controller-metrics rendered with metrics off")
		}
		if svc := typed[corev1.Service](t, find(objs, "Service", "weft-controller")); len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 {
			t.Errorf("weft-controller ports %+v, want the injector's only", svc.Spec.Ports)
		}
	}},
	{"nothing served", []string{"xds.enabled=false", "metrics.enabled=false", "injector.enabled=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
		for _, n := range []string{"weft-controller", "weft-controller-metrics"} {
			if find(objs, "Service", n) != nil {
				t.Errorf("Service %s rendered with nothing to serve", n)
			}
		}
		if find(objs, "ClusterRole", "weft-metrics-auth") != nil {
			t.Error("metrics RBAC rendered with metrics off")
		}
	}},
	{"one replica, no leader election, no PDB", []string{
		"controller.replicas=1", "controller.leaderElection=false", "controller.podDisruptionBudget.enabled=false",
	}, func(t *testing.T, objs []*unstructured.Unstructured) {
		if args := controllerArgs(t, objs); !slices.Contains(args, "--leader-elect=false") || !slices.Contains(args, "--drain-peers=false") {
			t.Errorf("leader election or the replicas' drain Leases still on: %v", args)
		}
		if find(objs, "PodDisruptionBudget", "weft-controller") != nil {
			t.Error("PodDisruptionBudget rendered although disabled")
		}
		role := find(objs, "Role", "weft-controller")
		if role == nil || strings.Contains(fmt.Sprint(role.Object["rules"]), "leases") {
			t.Errorf("without leader election the Role should not grant leases: %v", role)
		}
	}},
	{"mesh config", []string{
		"mesh.trustDomain=example.org", "mesh.certDelivery=sds", "mesh.leafTTL=2h", "mesh.proxy.image=registry.example/envoy:v1.36.2",
		"mesh.initImage=registry.example/weft:v9", "xds.host=mesh.example.org", "xds.port=15010",
		"controller.logLevel=2", "controller.logFormat=console", "controller.goMemLimit=900MiB",
	}, func(t *testing.T, objs []*unstructured.Unstructured) {
		args := controllerArgs(t, objs)
		for _, want := range []string{
			"--trust-domain=example.org", "--cert-delivery=sds", "--leaf-ttl=2h", "--proxy-image=registry.example/envoy:v1.36.2",
			"--init-image=registry.example/weft:v9", "--xds-host=mesh.example.org", "--xds-port=15010", "--xds-bind-address=:15010",
			"--log-level=2", "--log-format=console",
		} {
			if !slices.Contains(args, want) {
				t.Errorf("args %v lack %s", args, want)
			}
		}
		c := controller(t, objs)
		if e := envVar(c, "GOMEMLIMIT"); e == nil || e.Value != "900MiB" {
			t.Errorf("GOMEMLIMIT: %+v", e)
		}
	}},
	{"image by digest, scheduling", []string{
		"image.digest=sha256:" + strings.Repeat("ab", 32), "imagePullSecrets[0].name=regcred",
		"controller.nodeSelector.kubernetes\\.io/os=linux", "controller.tolerations[0].key=dedicated",
		"controller.tolerations[0].operator=Exists", "controller.priorityClassName=system-cluster-critical",
		"controller.podAnnotations.team=mesh", "controller.podLabels.tier=control",
		"controller.topologySpreadConstraints[0].maxSkew=2", "controller.topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
		"controller.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
	}, func(t *testing.T, objs []*unstructured.Unstructured) {
		d := typed[appsv1.Deployment](t, find(objs, "Deployment", "weft-controller"))
		c := controller(t, objs)
		if !strings.HasSuffix(c.Image, "@sha256:"+strings.Repeat("ab", 32)) {
			t.Errorf("image %s", c.Image)
		}
		if !slices.Contains(controllerArgs(t, objs), "--init-image="+c.Image) {
			t.Error("the init image is not the controller's own image")
		}
		p := d.Spec.Template.Spec
		if len(p.TopologySpreadConstraints) != 1 || p.TopologySpreadConstraints[0].MaxSkew != 2 ||
			p.NodeSelector["kubernetes.io/os"] != "linux" || p.PriorityClassName != "system-cluster-critical" ||
			d.Spec.Template.Labels["tier"] != "control" || d.Spec.Template.Annotations["team"] != "mesh" {
			t.Errorf("pod spec: %+v", p)
		}
	}},
}

func TestTemplateToggles(t *testing.T) {
	tl := newTools(t, env)
	for _, tc := range toggles {
		t.Run(tc.name, func(t *testing.T) {
			out := tl.mustRender(t, tc.set...)
			objs := decode(t, out)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			applied, err := tl.kubectl(strings.NewReader(out), "apply", "--server-side", "--dry-run=server",
				"--field-manager=weft-chart-test", "-f", "-")
			if err != nil {
				t.Fatalf("the API server refuses the rendered chart: %v", err)
			}
			if n := strings.Count(applied, "(server dry run)"); n != len(objs) {
				t.Errorf("the dry run applied %d objects, the chart rendered %d:\n%s", n, len(objs), applied)
			}
			if tc.check != nil {
				tc.check(t, objs)
			}
		})
	}
}

func checkDefaults(t *testing.T, objs []*unstructured.Unstructured) {
	d := typed[appsv1.Deployment](t, find(objs, "Deployment", "weft-controller"))
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
	}
	p := d.Spec.Template.Spec
	if p.ServiceAccountName != "weft-controller" {
		t.Errorf("service account %q", p.ServiceAccountName)
	}
	if sc := p.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", sc)
	}
	if len(p.TopologySpreadConstraints) == 0 || p.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("replicas are not spread over nodes: %+v", p.TopologySpreadConstraints)
	}
	c := controller(t, objs)
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v", sc)
	}
	for name, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.StrVal != "probes" {
			t.Errorf("%s probe %+v", name, probe)
		}
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
	if e := envVar(c, "GOMEMLIMIT"); e != nil {
		// weft sets 90% of the container's limit itself (internal/memlimit).
		t.Errorf("GOMEMLIMIT is set by default: %+v", e)
	}
	// The replica's name and its drain Lease's owner come from its pod.
	for name, field := range map[string]string{wire.EnvPodName: "metadata.name", wire.EnvPodUID: "metadata.uid"} {
		if e := envVar(c, name); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("%s is not the pod's %s: %+v", name, field, e)
		}
	}
	args := controllerArgs(t, objs)
	for _, want := range []string{"--leader-elect=true", "--mesh-namespace=" + releaseNamespace, "--webhook-port=9443", "--ca=builtin",
		"--webhook-service=weft-controller", "--webhook-configuration=weft-injector",
		"--xds-bind-address=:15012", "--xds-host=weft-controller.weft-system.svc", "--metrics-bind-address=:8443",
		"--drain-bind-address=:15014", "--drain-port=15014", "--drain-peers=true"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack %s", args, want)
		}
	}
	pdb := typed[policyv1.PodDisruptionBudget](t, find(objs, "PodDisruptionBudget", "weft-controller"))
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget %+v", pdb.Spec)
	}
	if slices.ContainsFunc(args, hasPrefix("--webhook-cert-dir")) {
		t.Errorf("args %v: by default weft signs the webhook's certificate, it reads none from files", args)
	}
	// The injector is on, served with weft's own certificate: the
	// configuration has no cert-manager annotation, and nothing of
	// cert-manager is rendered.
	checkWebhook(t, objs)
	w := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, find(objs, "MutatingWebhookConfiguration", "weft-injector"))
	if _, ok := w.Annotations["cert-manager.io/inject-ca-from"]; ok || len(w.Webhooks[0].ClientConfig.CABundle) != 0 {
		t.Errorf("the default injector's configuration %+v: want no cert-manager annotation and an empty caBundle for weft to fill", w.Annotations)
	}
	if find(objs, "Certificate", "weft-webhook") != nil || find(objs, "Issuer", "weft-selfsigned") != nil {
		t.Error("cert-manager objects are rendered by default")
	}
	if slices.ContainsFunc(controller(t, objs).VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "webhook-certs" }) {
		t.Error("the default controller mounts a certificate Secret")
	}
	metrics := typed[corev1.Service](t, find(objs, "Service", "weft-controller-metrics"))
	if metrics.Spec.Ports[0].Port != 8443 {
		t.Errorf("metrics ports %+v", metrics.Spec.Ports)
	}
}

// checkWebhook checks the injector's configuration and its Service port,
// whoever signs its certificate.
func checkWebhook(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	w := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, find(objs, "MutatingWebhookConfiguration", "weft-injector"))
	hook := w.Webhooks[0]
	if *hook.FailurePolicy != admissionregistrationv1.Fail || *hook.TimeoutSeconds > 10 || *hook.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun {
		t.Errorf("webhook %+v", hook)
	}
	if hook.ClientConfig.Service == nil || hook.ClientConfig.Service.Name != "weft-controller" || *hook.ClientConfig.Service.Port != 443 {
		t.Errorf("client config %+v", hook.ClientConfig)
	}
	var optIn, excluded bool
	for _, e := range hook.NamespaceSelector.MatchExpressions {
		switch {
		case e.Key == "mesh.weft.dev/inject" && e.Operator == "In" && slices.Equal(e.Values, []string{"enabled"}):
			optIn = true
		case e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn":
			excluded = slices.Contains(e.Values, "kube-system") && slices.Contains(e.Values, "weft-system") && slices.Contains(e.Values, releaseNamespace)
		}
	}
	if !optIn || !excluded {
		t.Errorf("namespaceSelector %+v: want opt-in only, never kube-system or weft-system", hook.NamespaceSelector)
	}
	svc := typed[corev1.Service](t, find(objs, "Service", "weft-controller"))
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 443 && p.TargetPort.StrVal == "webhook" }) {
		t.Errorf("no webhook port 443 in %+v", svc.Spec.Ports)
	}
}

func checkInjector(issuerKind, issuerName string) func(*testing.T, []*unstructured.Unstructured) {
	return func(t *testing.T, objs []*unstructured.Unstructured) {
		checkWebhook(t, objs)
		w := typed[admissionregistrationv1.MutatingWebhookConfiguration](t, find(objs, "MutatingWebhookConfiguration", "weft-injector"))
		if got := w.Annotations["cert-manager.io/inject-ca-from"]; got != releaseNamespace+"/weft-webhook" {
			t.Errorf("inject-ca-from %q", got)
		}
		cert := find(objs, "Certificate", "weft-webhook")
		if cert == nil {
			t.Fatal("no Certificate")
		}
		ref, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
		if ref["kind"] != issuerKind || ref["name"] != issuerName {
			t.Errorf("issuerRef %v, want %s %s", ref, issuerKind, issuerName)
		}
		if (find(objs, "Issuer", "weft-selfsigned") != nil) != (issuerName == "weft-selfsigned") {
			t.Error("the self-signed Issuer is rendered exactly when no issuer is named")
		}
		c := controller(t, objs)
		if !slices.Contains(controllerArgs(t, objs), "--webhook-port=9443") || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.MountPath == "/var/run/weft/webhook-certs"
		}) {
			t.Errorf("the controller does not serve the webhook with the certificate: %v", c.Args)
		}
		if !slices.Contains(c.Args, "--webhook-cert-dir=/var/run/weft/webhook-certs") {
			t.Errorf("the controller does not read cert-manager's certificate: %v", c.Args)
		}
	}
}

func controller(t *testing.T, objs []*unstructured.Unstructured) corev1.Container {
	t.Helper()
	d := typed[appsv1.Deployment](t, find(objs, "Deployment", "weft-controller"))
	return d.Spec.Template.Spec.Containers[0]
}

func controllerArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	return controller(t, objs).Args
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func hasPrefix(p string) func(string) bool {
	return func(s string) bool { return strings.HasPrefix(s, p) }
}

// TestBadValuesAreRefused: a wrong value fails helm template (and so helm
// install) with the value's path in the message.
func TestBadValuesAreRefused(t *testing.T) {
	tl := newTools(t, env)
	for _, tc := range []struct{ set, want string }{
		{"mesh.certDelivery=files", "/mesh/certDelivery"},
		{"mesh.leafTTL=1d", "/mesh/leafTTL"},
		{"mesh.trustDomain=Example.ORG", "/mesh/trustDomain"},
		{"controller.replicas=0", "/controller/replicas"},
		{"controller.replicaz=3", "replicaz"},
		{"controller.logFormat=text", "/controller/logFormat"},
		{"controller.goMemLimit=1Gi", "/controller/goMemLimit"},
		{"image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"image.digest=latest", "/image/digest"},
		{"xds.port=70000", "/xds/port"},
		{"injector.timeoutSeconds=30", "/injector/timeoutSeconds"},
		{"certManager.issuerRef.kind=Vault", "/certManager/issuerRef/kind"},
		{"mesh.ca.source=certManager", "/mesh/ca/issuerRef/name"},
		{"mesh.ca.source=vault", "/mesh/ca/source"},
		{"mesh.ca.source=certManagerIssuer", "/mesh/ca/issuerRef/name"},
		{"mesh.ca.source=certManager,mesh.ca.issuerRef.name=a,mesh.ca.issuerRef.kind=VaultIssuer", "/mesh/ca/issuerRef/kind"},
		{"mesh.ca.source=certManagerIssuer,mesh.ca.issuerRef.name=a,mesh.certDelivery=podCertificate", "/mesh/certDelivery"},
		{"mesh.ca.source=certManagerIssuer,mesh.ca.issuerRef.name=a,mesh.ca.requestsPerSecond=0", "/mesh/ca/requestsPerSecond"},
		{"mesh.ca.source=certManagerIssuer,mesh.ca.issuerRef.name=a,mesh.ca.trustBundle=Corp_Roots", "/mesh/ca/trustBundle"},
		{"mesh.tracing.endpoint=collector", "/mesh/tracing/endpoint"},
		{"mesh.tracing.samplingPercent=150", "/mesh/tracing/samplingPercent"},
		{"mesh.tracing.samplingPercent=-1", "/mesh/tracing/samplingPercent"},
		{"mesh.tracing.endpoint=http://collector:4317", "/mesh/tracing/endpoint"},
		{"mesh.metrics.endpoint=collector", "/mesh/metrics/endpoint"},
		{"mesh.metrics.endpoint=http://collector:4317", "/mesh/metrics/endpoint"},
		{"mesh.metrics.endpoints=collector:4317", "endpoints"},
		{"mesh.accessLog.format=%RESPONSE_CODES%", "/mesh/accessLog/format"},
		{"mesh.accessLog.format=%REQ%", "/mesh/accessLog/format"},
		{"mesh.proxy.resources.limits.memory=lots", "/mesh/proxy/resources/limits/memory"},
		{"monitoring.serviceMonitor.enabled=true,metrics.enabled=false", "/metrics/enabled"},
		{"monitoring.serviceMonitor.interval=30", "/monitoring/serviceMonitor/interval"},
		{"monitoring.serviceMonitor.tokenSecret.name=Corp_Token", "/monitoring/serviceMonitor/tokenSecret/name"},
		{"monitoring.serviceMonitor.tlsConfig.insecureSkipVerify=yes", "/monitoring/serviceMonitor/tlsConfig/insecureSkipVerify"},
		{"monitoring.podMonitor.namespaceSelector.all=true", "/monitoring/podMonitor/namespaceSelector"},
		{"monitoring.prometheusRule.disabledAlerts={WeftNoSuchAlert}", "/monitoring/prometheusRule/disabledAlerts/0"},
		{"monitoring.dashboards.labels.grafana_dashboard=1", "/monitoring/dashboards/labels/grafana_dashboard"},
		{"monitoring.dashboards.namespace=Grafana", "/monitoring/dashboards/namespace"},
		{"monitoring.dashboard.enabled=true", "dashboard"},
	} {
		out, err := tl.render(tc.set)
		if err == nil {
			t.Errorf("--set %s was accepted:\n%.300s", tc.set, out)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: the error does not name %s:\n%v", tc.set, tc.want, err)
		}
	}
}
