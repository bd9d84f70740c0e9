package chart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv"
)

// releaseNamespace is where the tests install the chart, as the docs do.
const releaseNamespace = "weft-system"

// tools runs helm and kubectl against one API server, each with a home of
// its own, so that nothing is read from or written to the user's.
type tools struct {
	root       string
	kubeconfig string
	home       string
}

func newTools(t testing.TB, env *testenv.Env) *tools {
	t.Helper()
	dir := t.TempDir()
	tl := &tools{root: env.Root, kubeconfig: filepath.Join(dir, "kubeconfig"), home: dir}
	if err := env.Kubeconfig(tl.kubeconfig); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tl.helmPath()); err != nil {
		t.Fatalf("helm is missing (%v): run 'make tools'", err)
	}
	return tl
}

func (tl *tools) helmPath() string { return filepath.Join(tl.root, "bin", "helm") }
func (tl *tools) chartDir() string { return filepath.Join(tl.root, "charts", "weft") }
func (tl *tools) kubectlPath() string {
	return filepath.Join(tl.root, "bin", "k8s", testenv.K8sVersion, "kubectl")
}

func (tl *tools) env() []string {
	return append(os.Environ(),
		"KUBECONFIG="+tl.kubeconfig,
		"HOME="+tl.home,
		"KUBECACHEDIR="+filepath.Join(tl.home, "kubecache"),
		"HELM_CACHE_HOME="+filepath.Join(tl.home, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(tl.home, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(tl.home, "helm", "data"),
	)
}

// exec runs a binary and returns its standard output; the error carries
// the command line and its standard error.
func (tl *tools) exec(bin string, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = tl.env()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (tl *tools) helm(args ...string) (string, error) { return tl.exec(tl.helmPath(), nil, args...) }

func (tl *tools) kubectl(stdin io.Reader, args ...string) (string, error) {
	return tl.exec(tl.kubectlPath(), stdin, append([]string{"--kubeconfig", tl.kubeconfig}, args...)...)
}

// render runs helm template with the given --set values.
func (tl *tools) render(set ...string) (string, error) {
	args := []string{"template", "weft", tl.chartDir(), "--namespace", releaseNamespace}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return tl.helm(args...)
}

// decode splits a YAML stream into objects, skipping empty documents.
func decode(t testing.TB, stream string) []*unstructured.Unstructured {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		err := d.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decoding the rendered chart: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the one object of a kind and name, or nil.
func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// typed converts a rendered object into its Go type.
func typed[T any](t testing.TB, o *unstructured.Unstructured) *T {
	t.Helper()
	if o == nil {
		t.Fatalf("want a %T, the chart rendered none", *new(T))
	}
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return &v
}

// certManagerCRDs is the directory of cert-manager's CRDs (testdata).
func certManagerCRDs(root string) string {
	return filepath.Join(root, "test", "chart", "testdata", "cert-manager")
}

// mustRender renders the chart or fails the test.
func (tl *tools) mustRender(t testing.TB, set ...string) string {
	t.Helper()
	out, err := tl.render(set...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mustHelm runs helm or fails the test.
func (tl *tools) mustHelm(t testing.TB, args ...string) string {
	t.Helper()
	out, err := tl.helm(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startEnvWithoutWeftCRDs starts a control plane of the test's own with
// cert-manager's CRDs but none of weft's (the release must create them, as
// in a cluster weft was never installed into), stopped when the test ends.
func startEnvWithoutWeftCRDs(t *testing.T) *testenv.Env {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	e, err := testenv.StartWith(testenv.Options{CRDDirs: []string{certManagerCRDs(root)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
	})
	return e
}

// applyUserMesh makes the namespace shop with the Service reviews and
// applies userYAML with kubectl, as a user keeping them in git would, once
// the release's CRDs serve. It returns the objects of userYAML.
func applyUserMesh(ctx context.Context, t *testing.T, e *testenv.Env, tl *tools) []*unstructured.Unstructured {
	t.Helper()
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}, Selector: map[string]string{"app": "reviews"}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 90*time.Second, func(context.Context) error {
		_, err := tl.kubectl(strings.NewReader(userYAML), "apply", "-f", "-")
		return err
	}); err != nil {
		t.Fatalf("applying the custom resources: %v", err)
	}
	return decode(t, userYAML)
}

// live reads the object that o names (kind, namespace, name) from the API
// server; an object of a namespaced kind without a namespace is looked for
// in the release namespace, where helm puts it.
func live(ctx context.Context, e *testenv.Env, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	key := client.ObjectKeyFromObject(o)
	if key.Namespace == "" {
		namespaced, err := e.Client.IsObjectNamespaced(o)
		if err != nil {
			return nil, err
		}
		if namespaced {
			key.Namespace = releaseNamespace
		}
	}
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(o.GroupVersionKind())
	if err := e.Client.Get(ctx, key, got); err != nil {
		return nil, err
	}
	return got, nil
}

// helmRevision is one line of helm history -o json.
type helmRevision struct {
	Revision   int    `json:"revision"`
	Status     string `json:"status"`
	Chart      string `json:"chart"`
	AppVersion string `json:"app_version"`
}

// history returns the release's revisions, oldest first.
func (tl *tools) history(t *testing.T) []helmRevision {
	t.Helper()
	var revs []helmRevision
	if err := json.Unmarshal([]byte(tl.mustHelm(t, "history", "weft", "--namespace", releaseNamespace, "-o", "json")), &revs); err != nil {
		t.Fatalf("helm history -o json: %v", err)
	}
	return revs
}
