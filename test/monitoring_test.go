package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// The chart's monitoring files: the alerts (a Prometheus rules file that
// the chart's PrometheusRule carries) and the Grafana dashboards.
var (
	alertsFile    = filepath.Join("charts", "weft", "files", "monitoring", "alerts.yaml")
	dashboardsDir = filepath.Join("charts", "weft", "files", "monitoring", "dashboards")
	alertTests    = filepath.Join("test", "testdata", "alerts_test.yaml")
)

// rulesFile is the part of a Prometheus rules file the tests read.
type rulesFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// TestAlertRules: promtool (bin/promtool, built from Prometheus's pinned
// module) finds the chart's alerts valid and passes their unit tests; the
// unit tests fire every alert and also show it quiet; every alert has a
// severity, a summary and a description; docs/operations.md's table of
// alerts names each of them and no other; and every weft metric the
// alerts read is one weft exports.
func TestAlertRules(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	promtool := tool(t, root, "promtool")
	if out, err := exec.Command(promtool, "check", "rules", filepath.Join(root, alertsFile)).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if out, err := exec.Command(promtool, "test", "rules", filepath.Join(root, alertTests)).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}

	var rules rulesFile
	readYAML(t, filepath.Join(root, alertsFile), &rules)
	var tests struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			Name          string `json:"name"`
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	readYAML(t, filepath.Join(root, alertTests), &tests)
	if want := filepath.ToSlash(filepath.Join("..", "..", alertsFile)); !slices.Equal(tests.RuleFiles, []string{want}) {
		t.Errorf("the unit tests load %v, want the chart's file %s", tests.RuleFiles, want)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	exported := map[string]bool{}
	for _, n := range metricNames(t) {
		exported[n] = true
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s holds a rule that is no alert: %s", g.Name, r.Expr)
				continue
			}
			alerts = append(alerts, r.Alert)
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: the unit tests fire it: %v, show it quiet: %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s lacks a summary or a description", r.Alert)
			}
			for _, m := range weftMetrics(r.Expr) {
				if !exported[m] {
					t.Errorf("%s reads %s, which weft does not export", r.Alert, m)
				}
			}
		}
	}
	docs, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(Weft[A-Za-z]+)` \\|").FindAllStringSubmatch(string(docs), -1) {
		documented = append(documented, m[1])
	}
	if !slices.Equal(documented, alerts) {
		t.Errorf("docs/operations.md's alerts table lists %v; the rules file has %v (in this order)", documented, alerts)
	}
}

// dashQuery is one query of a dashboard: a panel's target, or a
// variable's.
type dashQuery struct {
	Dashboard, Panel, RefID string
	// Expr is the query as written in the dashboard.
	Expr string
	// Variable says the query lists a variable's values: Expr is
	// Grafana's label_values(metric, label) or query_result(query).
	Variable bool
}

func (q dashQuery) String() string {
	return fmt.Sprintf("%s, %s %s", q.Dashboard, q.Panel, q.RefID)
}

// grafanaVariables turns a dashboard's query into PromQL: Grafana's
// variable functions into the query they run, its interval variables into
// durations, and the dashboard's own variables into their "All" value.
func (q dashQuery) promQL(vars map[string]string, rateInterval, rng time.Duration) string {
	expr := q.Expr
	if q.Variable {
		if m := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]+)\)$`).FindStringSubmatch(expr); m != nil {
			expr = fmt.Sprintf("count by (%s) (%s)", m[2], m[1])
		} else if inner, ok := strings.CutPrefix(expr, "query_result("); ok {
			expr = strings.TrimSuffix(inner, ")")
		}
	}
	seconds := func(d time.Duration) string { return strconv.Itoa(int(math.Ceil(d.Seconds()))) + "s" }
	repl := []string{"$__rate_interval", seconds(rateInterval), "$__interval", seconds(rateInterval / 4), "$__range", seconds(rng)}
	for name, all := range vars {
		repl = append(repl, "${"+name+"}", all, "$"+name, all)
	}
	return strings.NewReplacer(repl...).Replace(expr)
}

// envoyOnly says a query reads Envoy's stats and nothing else: no Envoy
// runs in weft's tests, so it parses but returns no data here.
func (q dashQuery) envoyOnly() bool {
	names := metricSelectors.FindAllStringSubmatch(q.Expr, -1)
	return len(names) > 0 && !slices.ContainsFunc(names, func(m []string) bool { return !strings.HasPrefix(m[1], "envoy_") })
}

// metricSelectors finds the metric names of the selectors in a query.
var metricSelectors = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)

// weftMetrics lists the weft metrics a query reads, by their names as
// exported (a histogram's _bucket, _sum and _count named as the
// histogram); the labels weft gives workloads' telemetry are not metrics.
func weftMetrics(expr string) []string {
	labels := []string{wire.StatTagNamespace, wire.StatTagService, wire.StatTagVersion, wire.StatTagIdentity,
		wire.StatTagDestinationNamespace, wire.StatTagDestinationService, wire.StatTagDestinationPort, wire.StatTagDestinationSubset}
	var out []string
	for _, m := range regexp.MustCompile(`\bweft_[a-z_]+`).FindAllString(expr, -1) {
		if slices.Contains(labels, m) {
			continue
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, suffix) && !strings.HasSuffix(m, "_total") {
				m = strings.TrimSuffix(m, suffix)
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// dashboards reads every dashboard of the chart: its queries and the "All"
// value of each of its variables.
func dashboards(t *testing.T, root string) map[string]struct {
	Queries []dashQuery
	Vars    map[string]string
} {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, dashboardsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s: %v", dashboardsDir, err)
	}
	type panel struct {
		Title   string  `json:"title"`
		Type    string  `json:"type"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	out := map[string]struct {
		Queries []dashQuery
		Vars    map[string]string
	}{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Title      string  `json:"title"`
			UID        string  `json:"uid"`
			Panels     []panel `json:"panels"`
			Templating struct {
				List []struct {
					Name     string `json:"name"`
					Type     string `json:"type"`
					Query    any    `json:"query"`
					AllValue string `json:"allValue"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s has no uid or title", f)
		}
		name := filepath.Base(f)
		entry := out[name]
		entry.Vars = map[string]string{}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				walk(p.Panels)
				if p.Type != "row" && len(p.Targets) == 0 {
					t.Errorf("%s: panel %q has no query", name, p.Title)
				}
				for _, tg := range p.Targets {
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s: panel %q, query %s is empty", name, p.Title, tg.RefID)
					}
					entry.Queries = append(entry.Queries, dashQuery{Dashboard: name, Panel: p.Title, RefID: tg.RefID, Expr: tg.Expr})
				}
			}
		}
		walk(d.Panels)
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q, ok := v.Query.(string)
			if !ok {
				t.Errorf("%s: variable %s: want its query as a string, got %T", name, v.Name, v.Query)
				continue
			}
			if v.AllValue == "" {
				t.Errorf("%s: variable %s has no allValue", name, v.Name)
			}
			entry.Vars[v.Name] = v.AllValue
			entry.Queries = append(entry.Queries, dashQuery{Dashboard: name, Panel: "variable " + v.Name, Expr: q, Variable: true})
		}
		out[name] = entry
	}
	return out
}

// TestDashboardQueriesParse: every query of the chart's dashboards (each
// panel's and each variable's, with Grafana's variables replaced as Grafana
// would) is valid PromQL to Prometheus's own parser (promtool check rules,
// on a rules file that records each); every weft metric they read is one
// weft exports, and the control-plane dashboard reads every one of them.
// Whether they return data is checked where the data is made:
// TestPrometheusScrapesTheControlPlane (control plane) and
// TestProxylessTelemetryReachesTheCollector (the mesh).
func TestDashboardQueriesParse(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	promtool := tool(t, root, "promtool")
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var recorded []rule
	byRecord := map[string]dashQuery{}
	exported := map[string]bool{}
	for _, n := range metricNames(t) {
		exported[n] = true
	}
	read := map[string]bool{}
	for name, d := range dashboards(t, root) {
		for _, q := range d.Queries {
			record := fmt.Sprintf("dashboard:query_%d", len(recorded))
			recorded = append(recorded, rule{Record: record, Expr: q.promQL(d.Vars, time.Minute, time.Hour)})
			byRecord[record] = q
			for _, m := range weftMetrics(q.Expr) {
				if !exported[m] {
					t.Errorf("%s reads %s, which weft does not export", q, m)
				}
				if name == "weft-control-plane.json" {
					read[m] = true
				}
			}
		}
	}
	for n := range exported {
		if !read[n] {
			t.Errorf("the control-plane dashboard shows nothing of %s", n)
		}
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": recorded}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboards.rules.yaml")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		for record, q := range byRecord {
			if strings.Contains(string(out), `"`+record+`"`) {
				t.Errorf("%s does not parse: %s", q, q.Expr)
			}
		}
		t.Fatalf("promtool check rules on the dashboards' queries: %v\n%s", err, out)
	}
	t.Logf("%d queries of %d dashboards parse", len(recorded), len(dashboards(t, root)))
}

// checkDashboardData runs every query of one of the chart's dashboards on
// prom over the range [start, now], as Grafana would draw it, and fails
// the test for each that returns no sample with a number in it. Queries
// that read Envoy's stats alone cannot return data (no Envoy runs here):
// they are listed in the log as not evaluated on real data.
func checkDashboardData(ctx context.Context, t *testing.T, prom *promServer, dashboard string, start time.Time) {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	d, ok := dashboards(t, root)[dashboard]
	if !ok {
		t.Fatalf("no dashboard %s", dashboard)
	}
	end := time.Now()
	evaluated := 0
	for _, q := range d.Queries {
		if q.envoyOnly() {
			t.Logf("not evaluated on real data (Envoy's stats; no Envoy runs here): %s", q)
			continue
		}
		expr := q.promQL(d.Vars, 30*time.Second, end.Sub(start)+time.Minute)
		n, err := prom.finiteSamples(ctx, expr, start, end)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		if n == 0 {
			t.Errorf("%s returned no data over the test's run: %s", q, expr)
		}
		evaluated++
	}
	t.Logf("%s: %d queries returned data over the test's run", dashboard, evaluated)
}

// finiteSamples runs a range query from start to end, one step every 2 s,
// and counts the samples that are numbers (not NaN).
func (p *promServer) finiteSamples(ctx context.Context, expr string, start, end time.Time) (int, error) {
	v := url.Values{"query": {expr}, "start": {strconv.FormatInt(start.Unix(), 10)},
		"end": {strconv.FormatInt(end.Unix()+1, 10)}, "step": {"2"}}
	var data struct {
		Result []struct {
			Values [][]any `json:"values"`
		} `json:"result"`
	}
	if err := p.api(ctx, "query_range", v, &data); err != nil {
		return 0, err
	}
	n := 0
	for _, series := range data.Result {
		for _, sample := range series.Values {
			if len(sample) != 2 {
				continue
			}
			s, _ := sample[1].(string)
			if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				n++
			}
		}
	}
	return n, nil
}

// tool is the path of a tool built into bin/, or the test fails.
func tool(t *testing.T, root, name string) string {
	t.Helper()
	p := filepath.Join(root, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing (%v): run 'make tools'", name, err)
	}
	return p
}

// readYAML reads a YAML file into v.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestSidecarQueriesUseWeftsNames: the dashboards' queries of Envoy's
// stats, which no test can run on real data here, rest on what weft
// itself names: the only weft_ labels they read are the tags the injected
// bootstrap gives every stat (wire.StatTag*, checked by inject's
// TestStatsTags), and the clusters they select are weft's inbound clusters
// (translate.InboundClusterName), never an outbound one
// (translate.ClusterName).
func TestSidecarQueriesUseWeftsNames(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	tags := []string{wire.StatTagNamespace, wire.StatTagService, wire.StatTagVersion, wire.StatTagIdentity}
	inbound := translate.InboundClusterName(9080)
	svc := &mesh.Service{Namespace: "shop", Name: "reviews", ServiceName: "reviews", Host: "reviews.shop.svc.cluster.local"}
	outbound := []string{translate.ClusterName(svc, mesh.Port{Number: 9080}, ""), translate.ClusterName(svc, mesh.Port{Number: 9080}, "v1")}
	clusterMatcher := regexp.MustCompile(`envoy_cluster_name=~"([^"]+)"`)
	sidecarQueries := 0
	for _, d := range dashboards(t, root) {
		for _, q := range d.Queries {
			if !q.envoyOnly() {
				continue
			}
			sidecarQueries++
			for _, l := range regexp.MustCompile(`\bweft_[a-z_]+`).FindAllString(q.Expr, -1) {
				if !slices.Contains(tags, l) {
					t.Errorf("%s reads the label %s, which the injected bootstrap does not set on every stat", q, l)
				}
			}
			for _, m := range clusterMatcher.FindAllStringSubmatch(q.Expr, -1) {
				re, err := regexp.Compile("^(?:" + m[1] + ")$")
				if err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				if !re.MatchString(inbound) {
					t.Errorf("%s: %q does not select weft's inbound cluster %s", q, m[1], inbound)
				}
				for _, o := range outbound {
					if re.MatchString(o) {
						t.Errorf("%s: %q selects the outbound cluster %s", q, m[1], o)
					}
				}
			}
		}
	}
	if sidecarQueries == 0 {
		t.Fatal("no dashboard query reads Envoy's stats")
	}
}
