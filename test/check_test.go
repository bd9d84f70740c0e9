package test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
)

// TestCheckNamesTheCertificateSetup: weft check reads how the controller's
// Deployment certifies workloads and what that needs, names the object and
// the fix for each problem, and exits 1 while one is left: pod
// certificates asked of an issuer, an issuer that does not exist or is not
// Ready, a missing trust bundle, a CA about to expire; it exits 0 on a
// sound --ca=cert-manager setup and says where keys live.
func TestCheckNamesTheCertificateSetup(t *testing.T) {
	weft := testenv.Binary(t, "weft")
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	env, err := testenv.StartWith(testenv.Options{CRDDirs: []string{
		filepath.Join(root, "config", "crd", "bases"),
		filepath.Join(root, "test", "chart", "testdata", "cert-manager"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	must(env.Kubeconfig(kubeconfig))
	const ns = "weft-system"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	check := func(wantErr bool, wants ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, weft, "check", "--kubeconfig="+kubeconfig).CombinedOutput()
		if (err != nil) != wantErr {
			t.Errorf("weft check exited with %v, want an error: %v\n%s", err, wantErr, out)
		}
		for _, w := range wants {
			if !strings.Contains(string(out), w) {
				t.Errorf("weft check does not say %q:\n%s", w, out)
			}
		}
	}

	check(true, "error   Deployment weft-system/weft-controller: the controller's Deployment cannot be read", "fix: install weft")

	labels := map[string]string{"app": "weft"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "weft-controller"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "controller", Image: "weft", Args: []string{"controller", "--ca=cert-manager", "--issuer-name=corp", "--issuer-kind=Issuer",
				"--cert-delivery=podCertificate", "--webhook-port=0"}}}}}}}
	must(c.Create(ctx, dep))
	check(true, "error   Deployment weft-system/weft-controller: no replica of the controller is available")
	// The test plays the Deployment controller: one replica is available.
	dep.Status.Replicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 1, 1, 1
	must(c.Status().Update(ctx, dep))
	check(true,
		"--ca=cert-manager with --cert-delivery=podCertificate", "fix: use --cert-delivery=sds",
		"error   Issuer weft-system/corp: the issuer weft asks does not exist",
		"error   ConfigMap weft-system/weft-trust-bundle: the trust bundle cannot be read",
		"warning MeshTrust mesh: no trust state yet")

	// The issuer exists but is not Ready; the bundle is there; SDS.
	issuer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
		"metadata": map[string]any{"name": "corp", "namespace": ns},
		"spec":     map[string]any{"selfSigned": map[string]any{}},
	}}
	must(c.Create(ctx, issuer))
	setIssuerReady := func(status string) {
		t.Helper()
		must(unstructured.SetNestedSlice(issuer.Object, []any{map[string]any{
			"type": "Ready", "status": status, "reason": "Test", "message": "set by the test", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		}}, "status", "conditions"))
		must(c.Status().Update(ctx, issuer))
	}
	setIssuerReady("False")
	ca, err := identity.NewRoot("cluster.local", time.Now(), 365*24*time.Hour)
	must(err)
	must(c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: identity.DefaultTrustBundle},
		Data: map[string]string{identity.BundleKey: string(identity.EncodeCerts([][]byte{ca.Cert.Raw}))}}))
	dep.Spec.Template.Spec.Containers[0].Args = []string{"controller", "--ca=cert-manager", "--issuer-name=corp", "--issuer-kind=Issuer", "--cert-delivery=sds", "--webhook-port=0"}
	must(c.Update(ctx, dep))
	check(true, "error   Issuer weft-system/corp: the issuer is not Ready (False: set by the test)")

	// Sound: exit 0, and it says where keys live.
	setIssuerReady("True")
	check(false, "info    Deployment weft-system/weft-controller: every workload certificate is signed by Issuer weft-system/corp",
		"keys live in the controller's memory", "info    API server: Kubernetes 1.", "--webhook-port=0: injection is off")

	// The trust state says a CA expires soon: an error naming it.
	mt := &meshv1.MeshTrust{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshTrustName}}
	must(c.Create(ctx, mt))
	mt.Status.Conditions = []metav1.Condition{
		{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonTrustLoaded, Message: "1 anchor(s) trusted", LastTransitionTime: metav1.Now()},
		{Type: meshv1.ConditionCAExpiring, Status: metav1.ConditionTrue, Reason: meshv1.ReasonExpiresSoon,
			Message: `the anchor "CN=corp root" (serial 1) expires at 2027-01-01T00:00:00Z, in 20 days`, LastTransitionTime: metav1.Now()},
	}
	must(c.Status().Update(ctx, mt))
	check(true, `error   MeshTrust mesh: the anchor "CN=corp root" (serial 1) expires at 2027-01-01T00:00:00Z, in 20 days`)
}
