package argocd_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// gitopsDoc is docs/gitops.md, from this directory.
var gitopsDoc = filepath.Join("..", "..", "docs", "gitops.md")

// TestGitOpsDocExamples: every YAML block of docs/gitops.md is a list of
// Kubernetes objects that parse (no duplicate keys), the chart's Argo CD
// Application carries exactly hack/argocd/ignore-differences.yaml and
// server-side apply, every Application diffs server-side, Flux's drift detection ignores the same field of the
// same object, the chart paths the examples name exist, and the doc shows
// the command that installs argocd-cm.yaml.
func TestGitOpsDocExamples(t *testing.T) {
	doc, err := os.ReadFile(gitopsDoc)
	if err != nil {
		t.Fatal(err)
	}
	objs := yamlBlocks(t, doc)

	var want struct {
		IgnoreDifferences []any `json:"ignoreDifferences"`
	}
	b, err := os.ReadFile("ignore-differences.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &want); err != nil || len(want.IgnoreDifferences) == 0 {
		t.Fatalf("ignore-differences.yaml: %v (%d entries)", err, len(want.IgnoreDifferences))
	}

	root := filepath.Join("..", "..")
	var chartApps, releases int
	for _, o := range objs {
		kind, _ := o["kind"].(string)
		spec, _ := o["spec"].(map[string]any)
		switch kind {
		case "Application":
			// The comparison test/chart/drift_test.go makes is a
			// server-side one; Argo CD's client-side diff misses the
			// CRDs' defaults inside lists.
			meta, _ := o["metadata"].(map[string]any)
			annotations, _ := meta["annotations"].(map[string]any)
			if opts, _ := annotations["argocd.argoproj.io/compare-options"].(string); !strings.Contains(opts, "ServerSideDiff=true") {
				t.Errorf("Application %v does not diff server-side (argocd.argoproj.io/compare-options: ServerSideDiff=true)", meta["name"])
			}
			source, _ := spec["source"].(map[string]any)
			if source["path"] != "charts/weft" {
				continue
			}
			chartApps++
			if !reflect.DeepEqual(spec["ignoreDifferences"], want.IgnoreDifferences) {
				t.Errorf("the chart's Application has ignoreDifferences\n%v\nnot those of ignore-differences.yaml\n%v", spec["ignoreDifferences"], want.IgnoreDifferences)
			}
			syncPolicy, _ := spec["syncPolicy"].(map[string]any)
			opts, _ := syncPolicy["syncOptions"].([]any)
			if !contains(opts, "ServerSideApply=true") {
				t.Errorf("the chart's Application does not sync with ServerSideApply=true: %v", opts)
			}
			if _, err := os.Stat(filepath.Join(root, "charts", "weft", "Chart.yaml")); err != nil {
				t.Error(err)
			}
		case "HelmRelease":
			releases++
			chart, _ := spec["chart"].(map[string]any)
			chartSpec, _ := chart["spec"].(map[string]any)
			if ref, _ := chartSpec["sourceRef"].(map[string]any); ref["kind"] == "GitRepository" {
				path, _ := chartSpec["chart"].(string)
				if _, err := os.Stat(filepath.Join(root, path, "Chart.yaml")); err != nil {
					t.Errorf("a HelmRelease takes the chart from %q: %v", path, err)
				}
			}
			if drift, ok := spec["driftDetection"].(map[string]any); ok {
				checkFluxIgnore(t, drift, want.IgnoreDifferences)
			}
		}
	}
	if chartApps != 1 {
		t.Errorf("docs/gitops.md has %d Argo CD Applications of charts/weft, want 1", chartApps)
	}
	if releases == 0 {
		t.Error("docs/gitops.md has no Flux HelmRelease")
	}

	const patch = "kubectl -n argocd patch configmap argocd-cm --patch-file hack/argocd/argocd-cm.yaml"
	if !bytes.Contains(doc, []byte(patch)) {
		t.Errorf("docs/gitops.md does not show %q", patch)
	}
	for _, kind := range []string{"MeshService", "TrafficPolicy", "PeerAuthentication"} {
		if !bytes.Contains(doc, []byte(kind)) {
			t.Errorf("docs/gitops.md does not mention %s", kind)
		}
	}
}

// checkFluxIgnore: a HelmRelease's drift detection ignores, for the object
// of each ignoreDifferences entry, the same field (a JSON pointer with a
// list index for jq's []).
func checkFluxIgnore(t *testing.T, drift map[string]any, entries []any) {
	t.Helper()
	rules, _ := drift["ignore"].([]any)
	for _, e := range entries {
		e, _ := e.(map[string]any)
		exprs, _ := e["jqPathExpressions"].([]any)
		for _, expr := range exprs {
			found := false
			for _, r := range rules {
				r, _ := r.(map[string]any)
				target, _ := r["target"].(map[string]any)
				if target["kind"] != e["kind"] || target["name"] != e["name"] {
					continue
				}
				paths, _ := r["paths"].([]any)
				for _, p := range paths {
					p, _ := p.(string)
					found = found || pointerShape(p) == jqShape(expr.(string))
				}
			}
			if !found {
				t.Errorf("no driftDetection.ignore rule of a HelmRelease ignores %s of %s %s", expr, e["kind"], e["name"])
			}
		}
	}
}

var listIndex = regexp.MustCompile(`/[0-9]+(/|$)`)

// pointerShape and jqShape write /webhooks/0/clientConfig/caBundle and
// .webhooks[]?.clientConfig.caBundle alike: /webhooks/[]/clientConfig/caBundle.
func pointerShape(p string) string {
	for listIndex.MatchString(p) {
		p = listIndex.ReplaceAllString(p, "/[]$1")
	}
	return p
}

func jqShape(expr string) string {
	expr = strings.ReplaceAll(expr, "[]?", "[]")
	expr = strings.ReplaceAll(expr, "[]", ".[]")
	return strings.ReplaceAll(expr, ".", "/")
}

func contains(list []any, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// yamlBlocks returns the documents of every ```yaml block of a Markdown
// file, each of which must be a Kubernetes object (apiVersion, kind,
// metadata.name) that parses without duplicate or unknown-typed keys.
func yamlBlocks(t *testing.T, doc []byte) []map[string]any {
	t.Helper()
	var objs []map[string]any
	var block strings.Builder
	in, start, blocks := false, 0, 0
	s := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		switch {
		case !in && line == "```yaml":
			in, start = true, n
			block.Reset()
		case in && line == "```":
			in = false
			blocks++
			r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(block.String())))
			for {
				d, err := r.Read()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("docs/gitops.md, the YAML block at line %d: %v", start, err)
				}
				if len(bytes.TrimSpace(d)) == 0 {
					continue
				}
				j, err := yaml.YAMLToJSONStrict(d)
				if err != nil {
					t.Errorf("docs/gitops.md, the YAML block at line %d does not parse: %v", start, err)
					continue
				}
				var o map[string]any
				if err := yaml.Unmarshal(j, &o); err != nil {
					t.Errorf("docs/gitops.md, the YAML block at line %d: %v", start, err)
					continue
				}
				meta, _ := o["metadata"].(map[string]any)
				if o["apiVersion"] == nil || o["kind"] == nil || meta["name"] == nil {
					t.Errorf("docs/gitops.md, the YAML block at line %d holds something that is not an object: %v", start, o)
					continue
				}
				objs = append(objs, o)
			}
		case in:
			block.WriteString(line + "\n")
		}
	}
	if in {
		t.Fatalf("docs/gitops.md: the YAML block at line %d is not closed", start)
	}
	if blocks == 0 {
		t.Fatal("docs/gitops.md has no YAML block")
	}
	return objs
}
