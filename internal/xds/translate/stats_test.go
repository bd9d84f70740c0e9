package translate

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// envoyTag applies a tag extractor as Envoy does: the expression is
// searched for in the stat's full name; the second capture group, or else
// the first, is the value.
func envoyTag(re *regexp.Regexp, name string) (string, bool) {
	m := re.FindStringSubmatchIndex(name)
	if len(m) < 4 || m[2] < 0 {
		return "", false
	}
	if len(m) >= 6 && m[4] >= 0 {
		return name[m[4]:m[5]], true
	}
	return name[m[2]:m[3]], true
}

// destinationTags are the tags the sidecar's extractors give a stat.
func destinationTags(t *testing.T, stat string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tag := range wire.DestinationStatTags() {
		re, err := regexp.Compile(tag.Regex)
		if err != nil {
			t.Fatalf("tag %s: %v", tag.Name, err)
		}
		if re.NumSubexp() < 1 {
			t.Fatalf("tag %s: no capture group", tag.Name)
		}
		if v, ok := envoyTag(re, stat); ok {
			out[tag.Name] = v
		}
	}
	return out
}

// wantTags are the destination tags of the clusters of a model's services,
// by cluster name, from the model's own fields: the name's format is not
// assumed here, so a cluster named another way fails the test.
func wantTags(m *mesh.Model) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, s := range m.Services {
		for _, p := range s.Ports {
			subsets := []string{""}
			for _, ss := range s.Subsets {
				subsets = append(subsets, ss.Name)
			}
			for _, ss := range subsets {
				tags := map[string]string{
					wire.StatTagDestinationNamespace: s.Namespace,
					wire.StatTagDestinationService:   s.ServiceName,
					wire.StatTagDestinationPort:      strconv.Itoa(int(p.Number)),
				}
				if ss != "" {
					tags[wire.StatTagDestinationSubset] = ss
				}
				out[ClusterName(s, p, ss)] = tags
			}
		}
	}
	return out
}

// TestStatTagsOnClusterNames matches the sidecars' destination tag
// extractors (in every injected bootstrap) against the stats of the
// clusters weft really sends in every golden case, and of the TCP proxies
// that name them: every outbound cluster's stats carry its service's
// namespace, Kubernetes Service name, port and subset, and the stats of
// weft's other clusters (inbound, passthrough, tracing) carry none.
func TestStatTagsOnClusterNames(t *testing.T) {
	dirs, err := os.ReadDir(casesDir)
	if err != nil {
		t.Fatal(err)
	}
	outbound := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		t.Run(d.Name(), func(t *testing.T) {
			dir := filepath.Join(casesDir, d.Name())
			var c goldenCase
			readYAML(t, filepath.Join(dir, "case.yaml"), &c)
			m := mesh.Build(readObjects(t, filepath.Join(dir, "input.yaml")))
			r, err := translateFor(m, Proxy{ID: c.Proxy.ID, Flavour: c.Proxy.Flavour, Pod: c.Proxy.Pod}, c.options())
			if err != nil {
				t.Fatal(err)
			}
			want := wantTags(m)
			check := func(stat, cluster string) {
				t.Helper()
				got := destinationTags(t, stat)
				w, ok := want[cluster]
				if !ok {
					w = map[string]string{}
				}
				if !maps.Equal(got, w) {
					t.Errorf("%s: tags %v, want %v", stat, got, w)
				}
			}
			for _, cl := range r.Clusters {
				if _, ok := want[cl.Name]; ok {
					outbound++
				}
				for _, suffix := range []string{"upstream_rq_total", "upstream_cx_active", "circuit_breakers.default.rq_open", "outlier_detection.ejections_active"} {
					check("cluster."+cl.Name+"."+suffix, cl.Name)
				}
			}
			for _, l := range r.Listeners {
				for _, fc := range append(l.FilterChains, l.DefaultFilterChain) {
					for _, f := range fc.GetFilters() {
						if cfg := f.GetTypedConfig(); cfg.MessageIs(&tcpproxyv3.TcpProxy{}) {
							var tp tcpproxyv3.TcpProxy
							if err := cfg.UnmarshalTo(&tp); err != nil {
								t.Fatal(err)
							}
							check("tcp."+tp.StatPrefix+".downstream_cx_total", tp.GetCluster())
						}
					}
				}
			}
		})
	}
	if outbound == 0 {
		t.Fatal("no outbound cluster in any golden case")
	}
}

// The extractors leave the stats of other names alone, however they
// look.
func TestStatTagsOnOtherNames(t *testing.T) {
	for _, stat := range []string{
		"cluster.inbound|9080.upstream_rq_total",
		"cluster.weft-passthrough.upstream_cx_total",
		"cluster.weft-tracing.upstream_cx_total",
		"http.reviews.bookinfo.svc.cluster.local:9080.downstream_rq_total",
		"listener.0.0.0.0_15001.downstream_cx_total",
		"cluster.outbound|x|v1|reviews.bookinfo.svc.cluster.local.upstream_rq_total",
		"server.live",
	} {
		if got := destinationTags(t, stat); len(got) != 0 {
			t.Errorf("%s: tags %v", stat, got)
		}
	}
	got := destinationTags(t, "cluster.outbound|9080|v2|reviews.bookinfo.svc.example.org.upstream_rq_total")
	if fmt.Sprint(got) != "map[weft_destination_namespace:bookinfo weft_destination_port:9080 weft_destination_service:reviews weft_destination_subset:v2]" {
		t.Errorf("another cluster domain: %v", got)
	}
}
