package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

// webhookCerts writes a CA and a serving certificate for 127.0.0.1 into
// dir (tls.crt, tls.key, as --webhook-cert-dir reads them, the way
// cert-manager would) and returns the CA's PEM.
func webhookCerts(t *testing.T, dir string) []byte {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webhook test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	ca, err := x509.ParseCertificate(caDER)
	must(err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &key.PublicKey, caKey)
	must(err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// TestCheckFindsSeededMisconfigurations: with the controller binary
// running against a real API server (its injector called by the API
// server through its MutatingWebhookConfiguration), the samples applied
// with the real kubectl over the workloads they name pass weft check (exit
// 0: the webhook reached by a dry-run pod, the trust state, the model's
// verdicts); then each of twelve misconfigurations of the mesh's objects,
// in a namespace of its own, makes weft check -n <namespace> exit 1 naming
// the object and the fix, and so do a caBundle that is not the mesh's
// roots and a webhook the API server cannot reach.
func TestCheckFindsSeededMisconfigurations(t *testing.T) {
	weft := testenv.Binary(t, "weft")
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(env.Kubeconfig(kubeconfig))
	certDir := filepath.Join(dir, "webhook-certs")
	must(os.Mkdir(certDir, 0o700))
	caPEM := webhookCerts(t, certDir)
	const meshNS = "weft-system"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNS}}))
	port := freePort(t)
	webhookURL := fmt.Sprintf("https://127.0.0.1:%d%s", port, inject.WebhookPath)
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "weft-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.mesh.weft.dev", AdmissionReviewVersions: []string{"v1"}, SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy: ptr.To(admissionregistrationv1.Fail), TimeoutSeconds: ptr.To[int32](5),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(webhookURL), CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{wire.LabelInject: wire.InjectEnabled}},
		}}}
	must(c.Create(ctx, mwc))
	args := []string{"--kubeconfig=" + kubeconfig, "--mesh-namespace=" + meshNS, fmt.Sprintf("--webhook-port=%d", port), "--webhook-cert-dir=" + certDir,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=console"}
	runWeftController(t, weft, filepath.Join(dir, "weft.log"), args...)
	// What weft check reads of the controller: its Deployment, as the
	// chart makes it, with the flags of the process the test runs (the test
	// plays the Deployment controller: one replica available).
	labels := map[string]string{"app": "weft"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: meshNS, Name: "weft-controller"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "controller", Image: "weft", Args: append([]string{"controller"}, args[1:]...)}}}}}}
	must(c.Create(ctx, dep))
	dep.Status.Replicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 1, 1, 1
	must(c.Status().Update(ctx, dep))

	check := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, weft, append([]string{"check", "--kubeconfig=" + kubeconfig}, args...)...).CombinedOutput()
		return string(out), err
	}

	// The workloads the samples name, in bookinfo (which opted in: the
	// running injector meshes every pod), then the samples themselves.
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Labels: map[string]string{wire.LabelInject: wire.InjectEnabled}}}))
	for _, sa := range []string{"default", "productpage", "reviews", "ratings", "mongodb"} {
		must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: sa}}))
	}
	ip := 60
	workload := func(ns, app, version, sa string, ports map[string]int32) {
		t.Helper()
		name := app + "-" + version
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app, "version": version}},
			Spec: corev1.PodSpec{ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		// The injector may not be serving yet.
		must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error { return c.Create(ctx, pod) }))
		var eps []discoveryv1.EndpointPort
		for n, p := range ports {
			eps = append(eps, discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(p)})
		}
		ip++
		must(c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: app}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: eps,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("192.0.2.%d", ip)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}}},
		}))
	}
	service := func(ns, name string, ports map[string]int32) {
		t.Helper()
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}}
		for n, p := range ports {
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: n, Port: p, TargetPort: intstr.FromString(n)})
		}
		must(c.Create(ctx, svc))
	}
	grpc := map[string]int32{"grpc": 9080}
	service("bookinfo", "reviews", grpc)
	service("bookinfo", "ratings", grpc)
	service("bookinfo", "mongodb", map[string]int32{"mongo": 27017, "metrics": 9216})
	for _, v := range []string{"v1", "v2", "v3"} {
		workload("bookinfo", "reviews", v, "reviews", grpc)
	}
	workload("bookinfo", "ratings", "v1", "ratings", grpc)
	workload("bookinfo", "mongodb", "v1", "mongodb", map[string]int32{"mongo": 27017, "metrics": 9216})
	workload("bookinfo", "productpage", "v1", "productpage", nil)
	root, err := testenv.Root()
	must(err)
	kubectl := exec.CommandContext(ctx, filepath.Join(env.AssetsDir(), "kubectl"), "--kubeconfig", kubeconfig, "apply", "-k", filepath.Join(root, "config", "samples"))
	kubectl.Env = append(os.Environ(), "KUBECACHEDIR="+t.TempDir())
	if out, err := kubectl.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply -k config/samples: %v\n%s", err, out)
	}
	// The controller writes the trust state and serves the webhook
	// shortly after it starts.
	var out string
	if err := testenv.Eventually(ctx, 2*time.Minute, func(context.Context) error {
		if out, err = check(); err != nil {
			return fmt.Errorf("weft check: %v\n%s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatalf("the samples do not pass weft check: %v", err)
	}
	for _, w := range []string{"info    MutatingWebhookConfiguration weft-injector: the API server calls the injector: a pod in namespace bookinfo (dry run) was injected",
		"info    API server: Kubernetes 1."} {
		if !strings.Contains(out, w) {
			t.Errorf("weft check on the samples does not say %q:\n%s", w, out)
		}
	}
	t.Logf("weft check on the samples:\n%s", out)

	// The misconfigurations, each in its namespace. seed makes the
	// namespace and returns helpers for it.
	type helpers struct {
		svc   func(name string)
		ms    func(name, service string, allow ...meshv1.AllowRule)
		pod   func(name, app, version string, meshed bool)
		tp    func(name string, spec meshv1.TrafficPolicySpec)
		pa    func(name string, spec meshv1.PeerAuthenticationSpec)
		slice func(service, pod string)
	}
	seed := func(t *testing.T, ns string) helpers {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
		must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}}))
		return helpers{
			svc: func(name string) {
				svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
					Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}}}}
				must(c.Create(ctx, svc))
			},
			ms: func(name, service string, allow ...meshv1.AllowRule) {
				must(c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: meshv1.MeshServiceSpec{
					ServiceName: service, Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}, Allow: allow,
					Subsets: []meshv1.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}}}))
			},
			pod: func(name, app, version string, meshed bool) {
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app, "version": version}},
					Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
				if meshed {
					// As the injector leaves it (this namespace did not opt in).
					p.Annotations = map[string]string{inject.AnnotationInjected: string(wire.FlavourEnvoy)}
				}
				must(c.Create(ctx, p))
			},
			tp: func(name string, spec meshv1.TrafficPolicySpec) {
				must(c.Create(ctx, &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}))
			},
			pa: func(name string, spec meshv1.PeerAuthenticationSpec) {
				must(c.Create(ctx, &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}))
			},
			slice: func(service, pod string) {
				ip++
				must(c.Create(ctx, &discoveryv1.EndpointSlice{
					ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: service + "-" + pod, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
					AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](9080)}},
					Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("192.0.2.%d", ip)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
						TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}},
				}))
			},
		}
	}
	// backend is a Service and MeshService "api" with one ready pod of
	// version v1.
	backend := func(h helpers, meshed bool, allow ...meshv1.AllowRule) {
		h.svc("api")
		h.ms("api", "api", allow...)
		h.pod("api-v1", "api", "v1", meshed)
		h.slice("api", "api-v1")
	}
	to := func(subset string) []meshv1.HTTPRoute {
		return []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: subset, Weight: 100}}}}
	}
	fromSA := func(ns, sa string) meshv1.AllowRule {
		return meshv1.AllowRule{From: []meshv1.Source{{Namespace: ns, ServiceAccount: sa}}}
	}
	strict := meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}
	timeouts := &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("2s")}
	for _, sc := range []struct {
		ns    string
		setup func(h helpers)
		wants []string
	}{
		{"seed-target", func(h helpers) {
			h.tp("orphan", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "missing"}, Timeouts: timeouts})
		}, []string{"error   TrafficPolicy seed-target/orphan: Accepted=False (TargetNotFound)", "fix: create the MeshService spec.targetRef.name names"}},
		{"seed-policy-conflict", func(h helpers) {
			backend(h, true)
			h.tp("first", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "api"}, Timeouts: timeouts})
			time.Sleep(1100 * time.Millisecond) // creation times a second apart: the older wins
			h.tp("second", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "api"}, Timeouts: timeouts})
		}, []string{"error   TrafficPolicy seed-policy-conflict/second: Accepted=False (Conflicted)", "fix: keep one: delete the newer TrafficPolicy"}},
		{"seed-empty-subset", func(h helpers) {
			backend(h, true)
			h.tp("canary", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "api"}, HTTP: to("v2")})
		}, []string{"error   TrafficPolicy seed-empty-subset/canary: spec.http[0] sends weight 100 to subset v2 of MeshService api, which has no ready endpoint",
			"fix: run pods with the subset's labels map[version:v2] behind Service api"}},
		{"seed-strict-unmeshed", func(h helpers) {
			backend(h, true)
			h.pa("default", strict)
			h.pod("legacy-client", "legacy", "v1", false)
		}, []string{"error   MeshService seed-strict-unmeshed/api: its endpoints take mTLS only (STRICT, set by PeerAuthentication seed-strict-unmeshed/default), and pods of its namespace run without a proxy (legacy-client)",
			"fix: mesh those pods"}},
		{"seed-unknown-sa", func(h helpers) {
			backend(h, true, fromSA("seed-unknown-sa", "ghost"))
			h.pa("default", strict)
		}, []string{"error   MeshService seed-unknown-sa/api: spec.allow[0].from[0] names ServiceAccount seed-unknown-sa/ghost, which does not exist",
			"fix: fix the ServiceAccount's name in spec.allow[0].from[0], or create it"}},
		{"seed-unknown-namespace", func(h helpers) {
			backend(h, true, meshv1.AllowRule{From: []meshv1.Source{{Namespace: "nowhere"}}})
			h.pa("default", strict)
		}, []string{"error   MeshService seed-unknown-namespace/api: spec.allow[0].from[0] names namespace nowhere, which does not exist",
			"fix: fix the namespace's name"}},
		{"seed-unknown-identity", func(h helpers) {
			backend(h, true, meshv1.AllowRule{From: []meshv1.Source{{Identity: "spiffe://cluster.local/ns/seed-unknown-identity/sa/gone"}}})
			h.pa("default", strict)
		}, []string{"error   MeshService seed-unknown-identity/api: spec.allow[0].from[0] names ServiceAccount seed-unknown-identity/gone, which does not exist"}},
		{"seed-selector", func(h helpers) {
			backend(h, true)
			h.pa("nobody", meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict, Selector: &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "no-such-app"}}})
		}, []string{"error   PeerAuthentication seed-selector/nobody: its spec.selector selects no pod", "fix: fix spec.selector"}},
		{"seed-no-service", func(h helpers) {
			h.ms("api", "no-such-service")
		}, []string{"error   MeshService seed-no-service/api: ResolvedRefs=False (ServiceNotFound)", "fix: create the Service, or fix spec.serviceName"}},
		{"seed-rules-conflict", func(h helpers) {
			backend(h, true, fromSA("seed-rules-conflict", "app"))
			h.pa("default", strict)
			// A second Service and MeshService over the same pod port,
			// with other rules.
			h.svc("api-internal")
			h.ms("api-internal", "api-internal", meshv1.AllowRule{From: []meshv1.Source{{Namespace: "bookinfo"}}})
			h.slice("api-internal", "api-v1")
		}, []string{"RulesEnforced=False (RulesConflict)", "fix: give both MeshServices the same allow rules"}},
		{"seed-not-strict", func(h helpers) {
			backend(h, true, fromSA("seed-not-strict", "app"))
			// Narrower than the samples' mesh-wide STRICT.
			h.pa("default", meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSPermissive})
		}, []string{"error   MeshService seed-not-strict/api: RulesEnforced=False (NotStrict)", "fix: make the endpoints STRICT with a PeerAuthentication"}},
		{"seed-pa-conflict", func(h helpers) {
			backend(h, true)
			h.pa("first", strict)
			time.Sleep(1100 * time.Millisecond)
			h.pa("second", meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSPermissive})
		}, []string{"error   PeerAuthentication seed-pa-conflict/second: Accepted=False (Conflicted)", "fix: keep one"}},
		{"seed-port", func(h helpers) {
			backend(h, true)
			h.tp("wrong-port", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "api", Port: ptr.To[int32](8080)}, Timeouts: timeouts})
		}, []string{"error   TrafficPolicy seed-port/wrong-port:", "(PortNotFound)", "fix: fix spec.targetRef.port"}},
	} {
		t.Run(sc.ns, func(t *testing.T) {
			sc.setup(seed(t, sc.ns))
			out, err := check("-n", sc.ns)
			if err == nil {
				t.Errorf("weft check -n %s exited 0:\n%s", sc.ns, out)
			}
			for _, w := range sc.wants {
				if !strings.Contains(out, w) {
					t.Errorf("weft check -n %s does not say %q:\n%s", sc.ns, w, out)
				}
			}
		})
	}
	// The samples' namespace still passes on its own.
	if out, err := check("-n", "bookinfo"); err != nil {
		t.Errorf("weft check -n bookinfo: %v\n%s", err, out)
	}

	// Pre-flight: a caBundle that is not the mesh's roots, where weft
	// signs the webhook's certificate itself (no --webhook-cert-dir).
	setArgs := func(args []string) {
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(dep), dep); err != nil {
				return err
			}
			dep.Spec.Template.Spec.Containers[0].Args = args
			return c.Update(ctx, dep)
		}))
	}
	withCertDir := dep.Spec.Template.Spec.Containers[0].Args
	var ownCert []string
	for _, a := range withCertDir {
		if !strings.HasPrefix(a, "--webhook-cert-dir=") {
			ownCert = append(ownCert, a)
		}
	}
	setArgs(ownCert)
	out, err = check("-n", "bookinfo")
	if err == nil || !strings.Contains(out, "error   MutatingWebhookConfiguration weft-injector: webhook inject.mesh.weft.dev's caBundle holds 1 certificate(s) that are not the mesh's") ||
		!strings.Contains(out, "fix: let the controller's leader write it") {
		t.Errorf("weft check with a caBundle that is not the mesh's roots: %v\n%s", err, out)
	}
	setArgs(withCertDir)

	// Pre-flight: the API server cannot reach the webhook.
	must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(mwc), mwc); err != nil {
			return err
		}
		mwc.Webhooks[0].ClientConfig.URL = ptr.To(fmt.Sprintf("https://127.0.0.1:%d%s", freePort(t), inject.WebhookPath))
		return c.Update(ctx, mwc)
	}))
	out, err = check("-n", "bookinfo")
	if err == nil || !strings.Contains(out, "error   MutatingWebhookConfiguration weft-injector: the API server could not use the injector for a pod in namespace bookinfo") ||
		!strings.Contains(out, "fix: check that the controller runs and is ready") {
		t.Errorf("weft check with a webhook the API server cannot reach: %v\n%s", err, out)
	}
}
