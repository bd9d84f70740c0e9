package chart_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestInstallUpgradeRollbackUninstall installs the chart with its defaults
// (the injector on, its certificate signed by weft) into an API server that
// has no weft CRDs yet, runs
// the controller with the chart's ServiceAccount, upgrades, rolls back and
// uninstalls: the controller and the injector go, the CRDs and the custom
// resources stay. No kubelet runs here: the Deployment's pods are never
// started, so the controller runs as a process of the test.
func TestInstallUpgradeRollbackUninstall(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	e, err := testenv.StartWith(testenv.Options{CRDDirs: []string{certManagerCRDs(root), prometheusOperatorCRDs(root)}, AuditLog: auditLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
	})
	// Room for helm, the 90 s wait for the CRDs and the controller's
	// minute-long waits on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	tl := newTools(t, e)
	var values []string // the defaults

	out := tl.mustHelm(t, append([]string{"install", "weft", tl.chartDir(), "--namespace", releaseNamespace, "--create-namespace"}, values...)...)
	if !strings.Contains(out, "STATUS: deployed") || !strings.Contains(out, "kubectl label namespace <your-namespace> mesh.weft.dev/inject=enabled") {
		t.Errorf("helm install did not print the next step:\n%s", out)
	}
	installed := decode(t, tl.mustHelm(t, "get", "manifest", "weft", "--namespace", releaseNamespace))
	for _, o := range installed {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopy()); err != nil {
			t.Errorf("%s %s was not created: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for _, kind := range []string{"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "ClusterRole",
		"ClusterRoleBinding", "Role", "RoleBinding", "PodDisruptionBudget", "MutatingWebhookConfiguration",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
		if !containsKind(installed, kind) {
			t.Errorf("the release has no %s", kind)
		}
	}

	// The CRDs come from the release: wait until they serve, then make the
	// resources a user would keep in git.
	shop := "shop"
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shop}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "reviews"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}, Selector: map[string]string{"app": "reviews"}},
	}); err != nil {
		t.Fatal(err)
	}
	// What a user keeps in git, applied as a user would.
	if err := testenv.Eventually(ctx, 90*time.Second, func(context.Context) error {
		_, err := tl.kubectl(strings.NewReader(userYAML), "apply", "-f", "-")
		return err
	}); err != nil {
		t.Fatalf("applying the custom resources: %v", err)
	}
	userObjects := decode(t, userYAML)

	// The namespace label of the default inbound policy is checked at
	// admission by the chart's ValidatingAdmissionPolicy.
	if err := testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		out, err := tl.kubectl(nil, "label", "namespace", shop, "--overwrite", "mesh.weft.dev/default-inbound=nobody")
		if err == nil {
			return fmt.Errorf("a default inbound policy that names nothing was accepted: %s", out)
		}
		if !strings.Contains(out+err.Error(), `metadata.labels[mesh.weft.dev/default-inbound]: "nobody" is not a default inbound policy`) {
			return fmt.Errorf("refused otherwise: %s %v", out, err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if out, err := tl.kubectl(nil, "label", "namespace", shop, "--overwrite", "mesh.weft.dev/default-inbound=namespace"); err != nil {
		t.Errorf("a valid default inbound policy was refused: %s %v", out, err)
	}

	t.Run("the controller with the chart's RBAC", func(t *testing.T) {
		runControllerAsChart(ctx, t, e, shop, userObjects)
	})
	t.Run("every granted verb used", func(t *testing.T) {
		checkGrantsUsed(t, installed, auditLog)
	})

	// An upgrade with changed values (a log level; the monitoring objects
	// on, against the Prometheus operator's CRDs), and a rollback to the
	// first revision: the custom resources are untouched, the Deployment
	// follows, the monitoring objects come and go.
	upgrade := []string{"upgrade", "weft", tl.chartDir(), "--namespace", releaseNamespace, "--set", "controller.logLevel=debug"}
	for _, s := range monitoringOn {
		upgrade = append(upgrade, "--set", s)
	}
	tl.mustHelm(t, append(upgrade, values...)...)
	if args := deploymentArgs(ctx, t, e); !strings.Contains(args, "--log-level=debug") {
		t.Errorf("after the upgrade the controller runs with %s", args)
	}
	t.Run("the monitoring objects", func(t *testing.T) {
		checkMonitoringLive(ctx, t, e, tl)
	})
	tl.mustHelm(t, "rollback", "weft", "1", "--namespace", releaseNamespace)
	if args := deploymentArgs(ctx, t, e); !strings.Contains(args, "--log-level=info") {
		t.Errorf("after the rollback the controller runs with %s", args)
	}
	checkMonitoringGone(ctx, t, e)
	checkExist(ctx, t, e, userObjects)

	out = tl.mustHelm(t, "uninstall", "weft", "--namespace", releaseNamespace)
	if !strings.Contains(out, "kept due to the resource policy") {
		t.Errorf("helm uninstall does not say what it kept:\n%s", out)
	}
	for _, o := range installed {
		err := e.Client.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopy())
		switch kept := o.GetKind() == "CustomResourceDefinition"; {
		case kept && err != nil:
			t.Errorf("helm uninstall removed CRD %s: %v", o.GetName(), err)
		case !kept && !apierrors.IsNotFound(err):
			t.Errorf("helm uninstall left %s %s (%v)", o.GetKind(), o.GetName(), err)
		}
	}
	checkExist(ctx, t, e, userObjects)
	if out := tl.mustHelm(t, "list", "--all-namespaces", "--short"); strings.TrimSpace(out) != "" {
		t.Errorf("releases left: %s", out)
	}
}

func containsKind(objs []*unstructured.Unstructured, kind string) bool {
	for _, o := range objs {
		if o.GetKind() == kind {
			return true
		}
	}
	return false
}

func deploymentArgs(ctx context.Context, t *testing.T, e *testenv.Env) string {
	t.Helper()
	var d appsv1.Deployment
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "weft-controller"}, &d); err != nil {
		t.Fatal(err)
	}
	return strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
}

func checkExist(ctx context.Context, t *testing.T, e *testenv.Env, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopy()); err != nil {
			t.Errorf("%s %s/%s is gone: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// userYAML is a small mesh in the namespace shop.
const userYAML = `
apiVersion: mesh.weft.dev/v1alpha1
kind: MeshService
metadata: {name: reviews, namespace: shop}
spec:
  serviceName: reviews
  ports: [{port: 9080, protocol: http}]
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: reviews-canary, namespace: shop}
spec:
  targetRef: {name: reviews}
  http:
  - backends: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
---
apiVersion: mesh.weft.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mode: STRICT
`
