package chart_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testenv"
)

// previousChart is the package of the previous release of the chart (see
// testdata/README-weft-0.1.0.md) and the values it was installed with: the
// injector, which 0.1.0 serves only with a certificate from cert-manager.
const previousChart = "testdata/weft-0.1.0.tgz"

var previousValues = []string{"--set", "injector.enabled=true", "--set", "certManager.enabled=true"}

// upgradeValues is the values file a user of 0.1.0 passes to the upgrade:
// explicit values, not --reuse-values (which would keep 0.1.0's values and
// skip the new chart's defaults). The injector stays on, its certificate
// now signed by weft instead of cert-manager.
const upgradeValues = `
injector:
  enabled: true
certManager:
  enabled: false
controller:
  logLevel: info
`

// weftCRDs are the CRDs every version of the chart installs.
var weftCRDs = []string{"meshservices.mesh.weft.dev", "trafficpolicies.mesh.weft.dev", "peerauthentications.mesh.weft.dev"}

// TestUpgradeFromPreviousRelease installs the previous release of the
// chart, makes what a running mesh has (custom resources, the root CA
// Secret the controller makes, its Lease, a root bundle ConfigMap), then
// upgrades to charts/weft with explicit values, rolls back to revision 1
// and uninstalls. At every step the custom resources keep their generation
// and spec, the CRDs stay, and the CA Secret keeps its UID and data; the
// release history says which chart each revision runs; uninstall leaves
// what docs/operations.md says it leaves.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	e := startEnvWithoutWeftCRDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tl := newTools(t, e)

	previous := chartVersion(t, tl, previousChart)
	current := chartVersion(t, tl, tl.chartDir())
	if previous != "0.1.0" {
		t.Fatalf("%s is chart version %s; testdata/README-weft-0.1.0.md says 0.1.0", previousChart, previous)
	}
	if current == previous {
		t.Fatalf("charts/weft is still version %s, the fixture's: bump Chart.yaml's version", current)
	}

	tl.mustHelm(t, append([]string{"install", "weft", previousChart, "--namespace", releaseNamespace, "--create-namespace"}, previousValues...)...)
	before := decode(t, tl.mustHelm(t, "get", "manifest", "weft", "--namespace", releaseNamespace))
	userObjects := applyUserMesh(ctx, t, e, tl)

	// What the controller makes at run time and no chart holds: stand-ins
	// (no controller runs here), labelled as weft labels its own.
	weftLabels := map[string]string{"app.kubernetes.io/managed-by": "weft"}
	ca := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: releaseNamespace, Name: "weft-root-ca", Labels: weftLabels},
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"tls.crt": []byte("-----BEGIN CERTIFICATE-----\nc3RhbmQtaW4gcm9vdA==\n-----END CERTIFICATE-----\n"),
			"tls.key": []byte("-----BEGIN PRIVATE KEY-----\nc3RhbmQtaW4ga2V5\n-----END PRIVATE KEY-----\n"),
			"ca.crt":  []byte("-----BEGIN CERTIFICATE-----\nc3RhbmQtaW4gcm9vdA==\n-----END CERTIFICATE-----\n"),
		},
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: releaseNamespace, Name: "weft-controller.mesh.weft.dev"}}
	bundle := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "weft-root-ca", Labels: weftLabels},
		Data:       map[string]string{"root-cert.pem": string(ca.Data["ca.crt"])},
	}
	for _, o := range []client.Object{ca, lease, bundle} {
		if err := e.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	keep := snapshot(ctx, t, e, userObjects)

	// The upgrade, as a user runs it: the new chart, a values file.
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, []byte(upgradeValues), 0o600); err != nil {
		t.Fatal(err)
	}
	tl.mustHelm(t, "upgrade", "weft", tl.chartDir(), "--namespace", releaseNamespace, "--values", valuesFile)
	checkRevisions(t, tl, []helmRevision{
		{Revision: 1, Status: "superseded", Chart: "weft-" + previous},
		{Revision: 2, Status: "deployed", Chart: "weft-" + current},
	})
	after := decode(t, tl.mustHelm(t, "get", "manifest", "weft", "--namespace", releaseNamespace))
	checkRelease(ctx, t, e, "after the upgrade", after, before)
	checkCRDs(ctx, t, e, "after the upgrade", "weft-"+current)
	keep.check(ctx, t, e, "after the upgrade", ca)
	// The resources a user keeps in git, applied again after the upgrade,
	// are valid under the new CRDs and change nothing.
	out, err := tl.kubectl(strings.NewReader(userYAML), "apply", "-f", "-")
	if err != nil {
		t.Errorf("after the upgrade, applying the same resources again: %v", err)
	}
	if n := strings.Count(out, " unchanged"); n != len(userObjects) {
		t.Errorf("after the upgrade, applying the same resources again changed some:\n%s", out)
	}

	tl.mustHelm(t, "rollback", "weft", "1", "--namespace", releaseNamespace)
	checkRevisions(t, tl, []helmRevision{
		{Revision: 1, Status: "superseded", Chart: "weft-" + previous},
		{Revision: 2, Status: "superseded", Chart: "weft-" + current},
		{Revision: 3, Status: "deployed", Chart: "weft-" + previous},
	})
	rolledBack := decode(t, tl.mustHelm(t, "get", "manifest", "weft", "--namespace", releaseNamespace))
	checkRelease(ctx, t, e, "after the rollback", rolledBack, after)
	checkCRDs(ctx, t, e, "after the rollback", "weft-"+previous)
	keep.check(ctx, t, e, "after the rollback", ca)

	// Uninstall leaves what docs/operations.md lists: the CRDs (and so the
	// custom resources), the CA Secret, the bundle ConfigMaps, the Lease
	// and the namespace. The rest of the release goes.
	out = tl.mustHelm(t, "uninstall", "weft", "--namespace", releaseNamespace)
	for _, crd := range weftCRDs {
		if !strings.Contains(out, crd) {
			t.Errorf("helm uninstall does not say it kept CRD %s:\n%s", crd, out)
		}
	}
	checkCRDs(ctx, t, e, "after helm uninstall", "weft-"+previous)
	keep.check(ctx, t, e, "after helm uninstall", ca)
	for _, o := range []client.Object{lease, bundle} {
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Errorf("after helm uninstall, %T %s is gone: %v", o, o.GetName(), err)
		}
	}
	var ns corev1.Namespace
	if err := e.Client.Get(ctx, client.ObjectKey{Name: releaseNamespace}, &ns); err != nil || ns.DeletionTimestamp != nil {
		t.Errorf("after helm uninstall, the namespace %s is gone or going (%v)", releaseNamespace, err)
	}
	for _, o := range rolledBack {
		if o.GetKind() == "CustomResourceDefinition" {
			continue
		}
		if _, err := live(ctx, e, o); !apierrors.IsNotFound(err) {
			t.Errorf("after helm uninstall, %s %s is still there (%v)", o.GetKind(), o.GetName(), err)
		}
	}
	if out := tl.mustHelm(t, "list", "--all-namespaces", "--short"); strings.TrimSpace(out) != "" {
		t.Errorf("releases left: %s", out)
	}
}

// chartVersion is the version in a chart's Chart.yaml (a directory or a
// package), as helm reads it.
func chartVersion(t *testing.T, tl *tools, chart string) string {
	t.Helper()
	var meta struct {
		Version string `json:"version"`
	}
	if err := yaml.Unmarshal([]byte(tl.mustHelm(t, "show", "chart", chart)), &meta); err != nil || meta.Version == "" {
		t.Fatalf("helm show chart %s: version %q (%v)", chart, meta.Version, err)
	}
	return meta.Version
}

// checkRevisions compares helm history with want (revision, status and
// chart of each revision).
func checkRevisions(t *testing.T, tl *tools, want []helmRevision) {
	t.Helper()
	got := tl.history(t)
	if len(got) != len(want) {
		t.Fatalf("helm history has %d revisions, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Revision != want[i].Revision || got[i].Status != want[i].Status || got[i].Chart != want[i].Chart {
			t.Errorf("helm history: revision %d %s %s, want revision %d %s %s",
				got[i].Revision, got[i].Status, got[i].Chart, want[i].Revision, want[i].Status, want[i].Chart)
		}
	}
	last := want[len(want)-1]
	out := tl.mustHelm(t, "list", "--namespace", releaseNamespace, "-o", "json")
	var list []struct {
		Name     string `json:"name"`
		Revision string `json:"revision"`
		Status   string `json:"status"`
		Chart    string `json:"chart"`
	}
	if err := yaml.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Revision != fmt.Sprint(last.Revision) || list[0].Chart != last.Chart || list[0].Status != "deployed" {
		t.Errorf("helm list: %+v, want weft at revision %d with %s, deployed", list, last.Revision, last.Chart)
	}
}

// checkRelease: every object of the release's manifest exists, and every
// object only the other revision had is gone (unless helm keeps it).
func checkRelease(ctx context.Context, t *testing.T, e *testenv.Env, when string, manifest, other []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range manifest {
		if _, err := live(ctx, e, o); err != nil {
			t.Errorf("%s, %s %s of the release is missing: %v", when, o.GetKind(), o.GetName(), err)
		}
	}
	for _, o := range other {
		if find(manifest, o.GetKind(), o.GetName()) != nil || o.GetAnnotations()["helm.sh/resource-policy"] == "keep" {
			continue
		}
		if _, err := live(ctx, e, o); !apierrors.IsNotFound(err) {
			t.Errorf("%s, %s %s, which the release no longer holds, is still there (%v)", when, o.GetKind(), o.GetName(), err)
		}
	}
}

// checkCRDs: weft's CRDs exist, serve, and carry the label of the chart
// that last wrote them.
func checkCRDs(ctx context.Context, t *testing.T, e *testenv.Env, when, chart string) {
	t.Helper()
	for _, name := range weftCRDs {
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
		crd.SetName(name)
		crd, err := live(ctx, e, crd)
		if err != nil {
			t.Errorf("%s, CRD %s is gone: %v", when, name, err)
			continue
		}
		if crd.GetDeletionTimestamp() != nil {
			t.Errorf("%s, CRD %s is being deleted", when, name)
		}
		if got := crd.GetLabels()["helm.sh/chart"]; got != chart {
			t.Errorf("%s, CRD %s was last written by %q, want %s", when, name, got, chart)
		}
	}
}

// kept is what must survive every step: each custom resource's UID,
// generation and spec, and the CA Secret's UID and data.
type kept struct {
	objects map[types.UID]*unstructured.Unstructured
}

func snapshot(ctx context.Context, t *testing.T, e *testenv.Env, objs []*unstructured.Unstructured) kept {
	t.Helper()
	k := kept{objects: map[types.UID]*unstructured.Unstructured{}}
	for _, o := range objs {
		got, err := live(ctx, e, o)
		if err != nil {
			t.Fatal(err)
		}
		k.objects[got.GetUID()] = got
	}
	return k
}

func (k kept) check(ctx context.Context, t *testing.T, e *testenv.Env, when string, ca *corev1.Secret) {
	t.Helper()
	for uid, want := range k.objects {
		got, err := live(ctx, e, want)
		if err != nil {
			t.Errorf("%s, %s %s/%s is gone: %v", when, want.GetKind(), want.GetNamespace(), want.GetName(), err)
			continue
		}
		if got.GetUID() != uid {
			t.Errorf("%s, %s %s/%s was recreated (UID %s, was %s)", when, want.GetKind(), want.GetNamespace(), want.GetName(), got.GetUID(), uid)
		}
		if got.GetGeneration() != want.GetGeneration() {
			t.Errorf("%s, %s %s/%s is at generation %d, was %d", when, want.GetKind(), want.GetNamespace(), want.GetName(), got.GetGeneration(), want.GetGeneration())
		}
		if !equality.Semantic.DeepEqual(got.Object["spec"], want.Object["spec"]) {
			t.Errorf("%s, the spec of %s %s/%s changed:\nnow %v\nwas %v", when, want.GetKind(), want.GetNamespace(), want.GetName(), got.Object["spec"], want.Object["spec"])
		}
	}
	var got corev1.Secret
	if err := e.Client.Get(ctx, client.ObjectKeyFromObject(ca), &got); err != nil {
		t.Errorf("%s, the CA Secret is gone: %v", when, err)
		return
	}
	if got.UID != ca.UID || !maps.EqualFunc(got.Data, ca.Data, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("%s, the CA Secret changed: UID %s (was %s), data equal: %t", when, got.UID, ca.UID,
			maps.EqualFunc(got.Data, ca.Data, func(a, b []byte) bool { return string(a) == string(b) }))
	}
}
