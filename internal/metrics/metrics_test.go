package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// names returns the name of every metric in All.
func names(t *testing.T) []string {
	t.Helper()
	fq := regexp.MustCompile(`fqName: "([a-z_:]+)"`)
	var out []string
	for _, c := range All {
		ch := make(chan *prometheus.Desc, 4)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			out = append(out, m[1])
		}
	}
	return out
}

// Every metric, with a sample of each, passes promlint (the checks of
// promtool check metrics), and is named weft_<...>.
func TestMetricsPassPromlint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(All...)
	Propagation.Observe(1)
	Translation.WithLabelValues(PartShared).Observe(0.001)
	Pushes.WithLabelValues("type.googleapis.com/envoy.config.listener.v3.Listener").Inc()
	PushSize.WithLabelValues("type.googleapis.com/envoy.config.listener.v3.Listener").Observe(1024)
	Proxies.WithLabelValues("grpc").Set(1)
	Unacknowledged.WithLabelValues("grpc").Set(1e9)
	NACKs.WithLabelValues("type.googleapis.com/envoy.config.listener.v3.Listener", "grpc").Inc()
	ServiceNACKs.WithLabelValues("shop/reviews").Inc()
	CertificatesIssued.WithLabelValues(DeliverySDS).Inc()
	CertificatesRefused.WithLabelValues(DeliverySDS, ReasonSignerFailed).Inc()
	LeafExpiry.WithLabelValues(DeliverySDS).Set(1e9)
	TrustExpiry.WithLabelValues("anchor", "CN=root", "01").Set(1e9)
	IssuerRequests.WithLabelValues("issued").Inc()
	IdentitiesWaiting.Set(0)
	InjectionDuration.WithLabelValues(OutcomeInjected).Observe(0.01)
	Injections.WithLabelValues(OutcomeSkipped, "HostNetwork").Inc()
	Leader.Set(1)
	LeaderTerms.Inc()
	Drains.WithLabelValues(DrainDrained).Observe(0.5)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != len(names(t)) {
		t.Fatalf("gathered %d families; every metric of All needs a sample here (%d)", len(mfs), len(names(t)))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, n := range names(t) {
		if !strings.HasPrefix(n, "weft_") {
			t.Errorf("%s lacks the weft_ prefix", n)
		}
	}
}

// docs/operations.md's table of metrics has a row for every metric, and
// names none that does not exist.
func TestEveryMetricIsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(weft_[a-z_]+)` \\|").FindAllStringSubmatch(string(b), -1) {
		rows[m[1]] = true
	}
	for _, n := range names(t) {
		if !rows[n] {
			t.Errorf("docs/operations.md has no row for %s", n)
		}
		delete(rows, n)
	}
	for n := range rows {
		t.Errorf("docs/operations.md documents %s, which weft does not export", n)
	}
}
