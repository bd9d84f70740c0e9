package chart_test

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestClusterRoleIsTheGeneratedOne: the chart's ClusterRole grants exactly
// what controller-gen generated from the +kubebuilder:rbac markers into
// config/rbac/role.yaml: a marker added in code without the chart (or a
// verb added to the chart without a marker) fails here.
func TestClusterRoleIsTheGeneratedOne(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(b, &generated); err != nil {
		t.Fatal(err)
	}
	tl := newTools(t, env)
	chart := typed[rbacv1.ClusterRole](t, find(decode(t, tl.mustRender(t)), "ClusterRole", "weft-controller"))
	want, got := grants(generated.Rules), grants(chart.Rules)
	for _, g := range want {
		if !slices.Contains(got, g) {
			t.Errorf("the chart's ClusterRole lacks %s (config/rbac/role.yaml grants it)", g)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("the chart's ClusterRole grants %s, which no +kubebuilder:rbac marker asks for", g)
		}
	}
}

// grants flattens rules into one "verb group/resource[/name]" per grant.
func grants(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, n := range names {
					for _, v := range r.Verbs {
						out = append(out, strings.TrimSuffix(v+" "+g+"/"+res+"/"+n, "/"))
					}
				}
			}
		}
		for _, u := range r.NonResourceURLs {
			for _, v := range r.Verbs {
				out = append(out, v+" "+u)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestEveryRuleIsExplained: in the chart's RBAC templates, every rule is
// preceded by a comment that says why it is there.
func TestEveryRuleIsExplained(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"clusterrole.yaml", "namespace-rbac.yaml", "metrics-rbac.yaml"} {
		f, err := os.Open(filepath.Join(root, "charts", "weft", "templates", name))
		if err != nil {
			t.Fatal(err)
		}
		s := bufio.NewScanner(f)
		prev, rules, inRules := "", 0, false
		for s.Scan() {
			line := s.Text()
			switch {
			case line == "rules:":
				inRules = true
			case inRules && strings.HasPrefix(line, "- "):
				rules++
				if !strings.HasPrefix(prev, "#") && !strings.HasPrefix(prev, "{{") {
					t.Errorf("%s: rule %q has no comment above it saying why", name, line)
				}
			case !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "{{") && !strings.HasPrefix(line, "- "):
				inRules = false
			}
			if !strings.HasPrefix(line, "  ") {
				prev = line
			}
		}
		f.Close()
		if rules == 0 {
			t.Errorf("%s: no rule found; has the file's layout changed?", name)
		}
	}
}
