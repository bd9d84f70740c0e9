package translate

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// localityInput is the reviews fixture with v1 endpoints in three zones
// of two regions (two in eu-1a, one in eu-1b, one in us-1a), placed by
// their nodes, a client pod on a node of each zone, and the policy set to
// locality (nil: the fixture's split alone).
func localityInput(loc *meshv1.LocalityPolicy) mesh.Input {
	in := xdstest.ReviewsInput(xdstest.Ready("r-a1", "v1", "10.0.0.1", 9080), xdstest.Ready("r-a2", "v1", "10.0.0.2", 9080),
		xdstest.Ready("r-b", "v1", "10.0.0.3", 9080), xdstest.Ready("r-us", "v1", "10.0.0.4", 9080))
	in.TrafficPolicies[0].Spec.Locality = loc
	zones := map[string][2]string{"node-a": {"eu-1", "eu-1a"}, "node-b": {"eu-1", "eu-1b"}, "node-us": {"us-1", "us-1a"}}
	for name, z := range zones {
		in.Nodes = append(in.Nodes, metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{corev1.LabelTopologyRegion: z[0], corev1.LabelTopologyZone: z[1]}}})
	}
	for i, node := range []string{"node-a", "node-a", "node-b", "node-us"} {
		in.Pods[i].Spec.NodeName = node
	}
	for _, node := range []string{"node-a", "node-b", "node-us", "node-unlabelled"} {
		in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "client-" + node}, Spec: corev1.PodSpec{NodeName: node}})
	}
	return in
}

// priorities renders an endpoints resource as "P<n>:<zone>=<addresses>"
// per locality, in order.
func priorities(cla *endpointv3.ClusterLoadAssignment) string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		var addrs []string
		for _, lb := range l.GetLbEndpoints() {
			addrs = append(addrs, lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
		out = append(out, fmt.Sprintf("P%d:%s=%s", l.GetPriority(), l.GetLocality().GetZone(), strings.Join(addrs, ",")))
	}
	return strings.Join(out, " ")
}

// A policy that prefers the caller's zone orders each cluster's endpoints
// for the caller: its zone, then its region, then the rest, numbered
// without gaps, with Envoy's overprovisioning factor from
// minHealthyPercent. The endpoints go in a resource of their own, made per
// caller locality; the shared set keeps the clusters, which name it.
func TestLocalityOrdersEndpointsForTheCaller(t *testing.T) {
	cluster := "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
	for _, tc := range []struct {
		name   string
		policy meshv1.LocalityPolicy
		caller string
		want   string
	}{
		{"zone, caller in eu-1a", meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone, MinHealthyPercent: ptr.To[meshv1.Percentage](70)}, "client-node-a",
			"P0:eu-1a=10.0.0.1,10.0.0.2 P1:eu-1b=10.0.0.3 P2:us-1a=10.0.0.4"},
		{"zone, caller in eu-1b", meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone}, "client-node-b",
			"P0:eu-1b=10.0.0.3 P1:eu-1a=10.0.0.1,10.0.0.2 P2:us-1a=10.0.0.4"},
		// No other zone in its region: priorities stay contiguous.
		{"zone, caller in us-1a", meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone}, "client-node-us",
			"P0:us-1a=10.0.0.4 P1:eu-1a=10.0.0.1,10.0.0.2 P1:eu-1b=10.0.0.3"},
		{"region, caller in eu-1b", meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferRegion, MinHealthyPercent: ptr.To[meshv1.Percentage](100)}, "client-node-b",
			"P0:eu-1a=10.0.0.1,10.0.0.2 P0:eu-1b=10.0.0.3 P1:us-1a=10.0.0.4"},
		// A caller whose place is not known gets every endpoint at once.
		{"zone, caller on an unlabelled node", meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone}, "client-node-unlabelled",
			"P0:eu-1a=10.0.0.1,10.0.0.2 P0:eu-1b=10.0.0.3 P0:us-1a=10.0.0.4"},
		{"zone, no pod", meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone}, "",
			"P0:eu-1a=10.0.0.1,10.0.0.2 P0:eu-1b=10.0.0.3 P0:us-1a=10.0.0.4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mesh.Build(localityInput(&tc.policy))
			sh, err := BuildShared(m, nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []wire.Flavour{wire.FlavourGRPC, wire.FlavourEnvoy} {
				if !sh.HasLocal(f) {
					t.Fatalf("%s: no endpoints by locality", f)
				}
				base := sh.GRPC
				if f == wire.FlavourEnvoy {
					base = sh.Envoy
				}
				c := findCluster(t, base.Clusters, cluster)
				if got := c.GetEdsClusterConfig().GetServiceName(); got != LocalEndpointsName(cluster) {
					t.Errorf("%s: the cluster's endpoints are %q, want %q", f, got, LocalEndpointsName(cluster))
				}
				if slices.ContainsFunc(base.Endpoints, func(cla *endpointv3.ClusterLoadAssignment) bool { return strings.HasSuffix(cla.ClusterName, cluster) }) {
					t.Errorf("%s: the shared set holds endpoints that depend on the caller", f)
				}
				pod := ""
				if tc.caller != "" {
					pod = mesh.Key("bookinfo", tc.caller)
				}
				local, err := sh.Local(f, sh.LocalityOf(pod), sh.ScopeOf(sh.CallerOf(pod)))
				if err != nil {
					t.Fatal(err)
				}
				var cla *endpointv3.ClusterLoadAssignment
				for _, x := range local.Endpoints {
					if x.ClusterName == LocalEndpointsName(cluster) {
						cla = x
					}
				}
				if cla == nil {
					t.Fatalf("%s: no endpoints %s at the caller's locality", f, LocalEndpointsName(cluster))
				}
				if got := priorities(cla); got != tc.want {
					t.Errorf("%s: got\n  %s\nwant\n  %s", f, got, tc.want)
				}
				want := uint32(143) // 70%: spill below 100/1.43
				if p := tc.policy.MinHealthyPercent; p != nil && *p == 100 {
					want = 100
				}
				if got := cla.GetPolicy().GetOverprovisioningFactor().GetValue(); got != want {
					t.Errorf("%s: overprovisioning factor %d, want %d", f, got, want)
				}
				// The whole proxy's set, with its endpoints by locality,
				// names nothing that is missing.
				all := *base
				all.Endpoints = append(slices.Clone(base.Endpoints), local.Endpoints...)
				if err := all.Validate(); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
		})
	}
}

// Without a locality preference (or with mode None) every cluster's
// endpoints are shared, and no proxy gets a set by locality.
func TestNoLocalityKeepsEndpointsShared(t *testing.T) {
	for _, loc := range []*meshv1.LocalityPolicy{nil, {Mode: meshv1.LocalityNone}} {
		sh, err := BuildShared(mesh.Build(localityInput(loc)), nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if sh.HasLocal(wire.FlavourGRPC) || sh.HasLocal(wire.FlavourEnvoy) {
			t.Errorf("%+v: endpoints by locality", loc)
		}
		for _, c := range sh.Envoy.Clusters {
			if n := c.GetEdsClusterConfig().GetServiceName(); n != "" && n != c.Name {
				t.Errorf("%+v: cluster %s names endpoints %s", loc, c.Name, n)
			}
		}
	}
}

// The model places pods by their node's labels, and endpoints by their
// EndpointSlice's zone or their node's.
func TestModelPlacesPodsAndEndpoints(t *testing.T) {
	m := mesh.Build(localityInput(&meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone}))
	if got, want := m.LocalityOf("bookinfo/client-node-b"), (mesh.Locality{Region: "eu-1", Zone: "eu-1b"}); got != want {
		t.Errorf("client on node-b at %+v, want %+v", got, want)
	}
	if got := m.LocalityOf("bookinfo/client-node-unlabelled"); got != (mesh.Locality{}) {
		t.Errorf("client on an unlabelled node at %+v", got)
	}
	s := m.Services["bookinfo/reviews"]
	var got []string
	for _, e := range s.Endpoints {
		got = append(got, e.Address+"@"+e.Region+"/"+e.Zone)
	}
	if want := "10.0.0.1@eu-1/eu-1a 10.0.0.2@eu-1/eu-1a 10.0.0.3@eu-1/eu-1b 10.0.0.4@us-1/us-1a"; strings.Join(got, " ") != want {
		t.Errorf("endpoints at %v, want %s", got, want)
	}
}

func findCluster(t *testing.T, cs []*clusterv3.Cluster, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cluster %s", name)
	return nil
}
