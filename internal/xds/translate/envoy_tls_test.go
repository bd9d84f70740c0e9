package translate

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// mtlsBookinfo is bookinfo under a namespace-wide STRICT policy, with
// reviews v2 PERMISSIVE by a workload policy.
func mtlsBookinfo() mesh.Input {
	in := bookinfo()
	strict := xdstest.StrictPeerAuthentication("bookinfo")
	strict.CreationTimestamp = metav1.NewTime(time.Unix(1_700_000_000, 0))
	v2 := xdstest.StrictPeerAuthentication("bookinfo")
	v2.Name, v2.Spec.Mode = "reviews-v2", meshv1.MTLSPermissive
	v2.Spec.Selector = &meshv1.WorkloadSelector{MatchLabels: map[string]string{"version": "v2"}}
	in.PeerAuthentications = append(in.PeerAuthentications, strict, v2)
	return in
}

// TestEnvoyMTLSFromFiles: with pod certificates, sidecars read the files
// the injector mounts, watching their directories; with no certificates
// at all, nothing is TLS.
func TestEnvoyMTLSFromFiles(t *testing.T) {
	m := mesh.Build(mtlsBookinfo())
	r, err := translateFor(m, Proxy{ID: "reviews-v1.bookinfo", Namespace: "bookinfo", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"},
		Options{EnvoyCerts: EnvoyCertsFiles})
	if err != nil {
		t.Fatal(err)
	}
	out := string(render(t, r))
	for _, want := range []string{wire.CertChainFile, wire.KeyFile, wire.RootsFile, `"path": "` + wire.CertsDir + `"`, `"path": "` + wire.RootsDir + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the sidecar's TLS does not read %s", want)
		}
	}
	if strings.Contains(out, `"name": "default"`) {
		t.Error("a sidecar with pod certificates is sent to SDS")
	}
	plain, err := translateFor(m, Proxy{ID: "reviews-v1.bookinfo", Namespace: "bookinfo", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(render(t, plain)); strings.Contains(s, "transport_socket") || strings.Contains(s, "transportSocket") {
		t.Error("TLS without certificates")
	}
}
