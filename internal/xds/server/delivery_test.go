package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// deliveryInput is bookinfo under a STRICT PeerAuthentication: reviews
// served by reviews-v1 (127.0.0.2), ratings by ratings-0 (127.0.0.3), and
// the callers' pods, each running as a ServiceAccount of its name.
func deliveryInput(reviews, ratings int32, callers ...string) mesh.Input {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", reviews))
	in.TrafficPolicies = nil
	in.PeerAuthentications = append(in.PeerAuthentications, xdstest.StrictPeerAuthentication("bookinfo"))
	in.Services = append(in.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "ratings"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080}}}})
	in.MeshServices = append(in.MeshServices, meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "ratings", Generation: 1},
		Spec: meshv1.MeshServiceSpec{ServiceName: "ratings", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}})
	in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "ratings-0", Labels: map[string]string{"app": "ratings"}},
		Spec: corev1.PodSpec{ServiceAccountName: "ratings"}})
	in.EndpointSlices = append(in.EndpointSlices, discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bookinfo", Name: "ratings-0", Labels: map[string]string{discoveryv1.LabelServiceName: "ratings"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(ratings)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "bookinfo", Name: "ratings-0"}}},
	})
	for _, sa := range callers {
		in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: sa}, Spec: corev1.PodSpec{ServiceAccountName: sa}})
	}
	return in
}

// TestEachProxyByItsOwnDelivery: under either delivery of the controller,
// grpc-go workloads are served by the delivery they were injected with
// (their node metadata). Under a STRICT PeerAuthentication, a client and
// a server injected with pod certificates speak mTLS; a client and a
// server injected with SDS (no certificate provider in their bootstraps)
// get no TLS, so neither NACKs, and they talk in plain text; only the SDS
// server counts as taking plain text under STRICT. A workload that does
// not say (injected by an older weft) is served by the controller's
// delivery: mTLS to reviews under pod certificates, plain text to ratings
// under SDS.
func TestEachProxyByItsOwnDelivery(t *testing.T) {
	ca, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certsOf := func(sa string) xdstest.Certs {
		return xdstest.IssueCerts(t, ca, filepath.Join(dir, sa), identity.ID{TrustDomain: "cluster.local", Namespace: "bookinfo", ServiceAccount: sa})
	}
	id := func(sa string) string { return "spiffe://cluster.local/ns/bookinfo/sa/" + sa }
	pa := mesh.Ref{Kind: mesh.KindPeerAuthentication, Namespace: "bookinfo", Name: "default"}
	for _, controller := range []wire.CertDelivery{wire.DeliveryPodCertificate, wire.DeliverySDS} {
		t.Run(string(controller), func(t *testing.T) {
			s, err := New(Options{Address: "127.0.0.1:0", Log: logr.Discard(), Delivery: controller})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			done := make(chan struct{})
			go func() { defer close(done); _ = s.Start(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			reviewsLis, err := net.Listen("tcp", "127.0.0.2:0")
			if err != nil {
				t.Fatal(err)
			}
			ratingsLis, err := net.Listen("tcp", "127.0.0.3:0")
			if err != nil {
				t.Fatal(err)
			}
			s.OnModel(ctx, mesh.Build(deliveryInput(int32(reviewsLis.Addr().(*net.TCPAddr).Port), int32(ratingsLis.Addr().(*net.TCPAddr).Port),
				"pc", "sds", "old")))
			ads, err := s.Addr(ctx)
			if err != nil {
				t.Fatal(err)
			}
			boot := func(pod string, d wire.CertDelivery, certs xdstest.Certs) []byte {
				return []byte(xdstest.BootstrapAs(ads, wire.NodeID(pod, "bookinfo"), d, certs))
			}
			xdstest.StartXDSBackendFrom(t, reviewsLis, boot("reviews-v1", wire.DeliveryPodCertificate, certsOf("reviews-v1")), "reviews-v1", 0)
			xdstest.StartXDSBackendFrom(t, ratingsLis, boot("ratings-0", wire.DeliverySDS, xdstest.Certs{}), "ratings-0", 0)
			reviews, ratings := "reviews.bookinfo.svc.cluster.local:9080", "ratings.bookinfo.svc.cluster.local:9080"

			type call struct {
				client, target string
				mtls           bool
				cl             *xdstest.Client
			}
			calls := []call{
				{client: "pc", target: reviews, mtls: true, cl: xdstest.NewClientFrom(t, boot("pc", wire.DeliveryPodCertificate, certsOf("pc")), reviews)},
				{client: "sds", target: ratings, cl: xdstest.NewClientFrom(t, boot("sds", wire.DeliverySDS, xdstest.Certs{}), ratings)},
			}
			if controller == wire.DeliveryPodCertificate {
				calls = append(calls, call{client: "old", target: reviews, mtls: true, cl: xdstest.NewClientFrom(t, boot("old", "", certsOf("old")), reviews)})
			} else {
				calls = append(calls, call{client: "old", target: ratings, cl: xdstest.NewClientFrom(t, boot("old", "", certsOf("old")), ratings)})
			}
			for _, c := range calls {
				var a xdstest.Answer
				err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
					callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					var err error
					a, err = c.cl.Ask(callCtx, grpc.WaitForReady(true))
					return err
				})
				if err != nil {
					t.Fatalf("%s calling %s: %v", c.client, c.target, err)
				}
				switch {
				case c.mtls && (a.Caller != id(c.client) || a.Server != id(a.Backend)):
					t.Errorf("%s calling %s: %+v, want mTLS between %s and the backend's identity", c.client, c.target, a, id(c.client))
				case !c.mtls && (a.Caller != "" || a.Server != ""):
					t.Errorf("%s calling %s: %+v, want plain text", c.client, c.target, a)
				}
			}
			// Nobody NACKed: every proxy acknowledged every type it was
			// sent, and rejected none.
			nodes := []string{"pc", "sds", "old", "reviews-v1", "ratings-0"}
			if err := testenv.Eventually(ctx, time.Minute, func(context.Context) error {
				for _, n := range nodes {
					node := wire.NodeID(n, "bookinfo")
					acked, nacked := s.acks.Replies(node)
					if len(nacked) > 0 {
						return fmt.Errorf("%s NACKed %v", node, nacked)
					}
					for typ, v := range s.cache.Versions(node) {
						if acked[typ] != v {
							return fmt.Errorf("%s has not acknowledged %s version %s (acknowledged %q)", node, typ, v, acked[typ])
						}
					}
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
			if n := s.TakingPlainText(pa.Kind, pa.Namespace, pa.Name); n != 1 {
				t.Errorf("%d workloads take plain text under the STRICT PeerAuthentication, want 1 (ratings-0, injected with SDS)", n)
			}
		})
	}
}
