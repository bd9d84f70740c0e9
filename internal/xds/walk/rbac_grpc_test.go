package walk_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/walk"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// The walks agree with grpc-go over mTLS. Inbound: reviews on a STRICT
// port lets productpage call Get only, and every workload of namespace
// ops call anything; for each caller and method, the walk through the
// sidecar's inbound configuration and a real call over mTLS to a grpc-go
// xDS server, configured by weft's server Listener for the same pod, let
// in or refuse the same calls. Outbound: the identity grpc-go's client
// verified on the server is the one identity both walks' clusters accept.
func TestWalkAgreesWithGRPCOverMTLS(t *testing.T) {
	var model *mesh.Model
	m := startMTLSReviews(t, func(port int32) mesh.Input {
		in := strictReviews(port)
		in.MeshServices[0].Spec.Allow = []meshv1.AllowRule{
			{From: []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "productpage"}},
				Paths: []meshv1.PathMatch{{Type: meshv1.MatchExact, Value: "/weft.test.Reviews/Get"}}, Methods: []meshv1.HTTPMethod{"POST"}},
			{From: []meshv1.Source{{Namespace: "ops"}}},
		}
		model = mesh.Build(in)
		return in
	})
	ctx, clients, port := m.ctx, m.clients, m.port
	// The sidecars' view of the same mesh and pod, and the grpc-go
	// server's own.
	sh, sidecar := reviewsSidecar(t, model, mtlsOptions)
	own, err := translate.Own(sh, translate.Proxy{ID: "reviews-v1.bookinfo", Flavour: wire.FlavourGRPC, Pod: "bookinfo/reviews-v1", Delivery: wire.DeliveryPodCertificate})
	if err != nil {
		t.Fatal(err)
	}
	grpcServer := walk.New(own)

	// Outbound: what the client checked on the server.
	answer, err := clients["bookinfo/productpage"].Ask(ctx, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	req := walk.Request{Target: target, DestinationIP: clusterIP, DestinationPort: 9080, Authority: target, Method: "POST", Path: "/weft.test.Reviews/Get"}
	for flavour, walkOf := range map[wire.Flavour]func(walk.Request) (*walk.Result, error){
		wire.FlavourGRPC: walk.New(sh.GRPCMTLS).Proxyless, wire.FlavourEnvoy: walk.New(sh.Envoy).Sidecar} {
		res, err := walkOf(req)
		if err != nil {
			t.Fatalf("%s walk: %v", flavour, err)
		}
		tls := res.Clusters[0].TLS
		if res.Clusters[0].TLSError != nil || tls == nil || len(tls.SANs) != 1 || tls.SANs[0] != answer.Server || tls.Certificate == "" || tls.Roots == "" {
			t.Errorf("%s walk: cluster %s TLS %+v (%v); grpc-go's client verified the server as %q", flavour, res.Clusters[0].Name, tls, res.Clusters[0].TLSError, answer.Server)
		}
	}

	for _, c := range []struct {
		caller, method string
		allowed        bool
	}{
		{"bookinfo/productpage", "/weft.test.Reviews/Get", true},
		{"bookinfo/productpage", "/weft.test.Reviews/New", false},
		{"bookinfo/details", "/weft.test.Reviews/Get", false},
		{"ops/debugger", "/weft.test.Reviews/New", true},
		{"ops/debugger", "/weft.test.Reviews/Get", true},
	} {
		t.Run(c.caller+" "+c.method, func(t *testing.T) {
			ns, sa, _ := strings.Cut(c.caller, "/")
			walked, err := sidecar.SidecarInbound(uint32(port), walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", ns, sa)},
				walk.Request{Method: "POST", Path: c.method, Authority: target, Headers: map[string]string{"content-type": "application/grpc"}})
			if err != nil {
				t.Fatal(err)
			}
			server, err := grpcServer.ProxylessInbound(net.JoinHostPort("127.0.0.2", strconv.Itoa(int(port))),
				walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", ns, sa)},
				walk.Request{Method: "POST", Path: c.method, Authority: target, Headers: map[string]string{"content-type": "application/grpc"}})
			if err != nil {
				t.Fatal(err)
			}
			called := m.invoke(t, c.caller, c.method)
			if walked.Allowed != c.allowed || server.Allowed != c.allowed || called != c.allowed {
				t.Errorf("the sidecar's walk let it in: %v (%s); the proxyless server's walk: %v (%s); grpc-go: %v; want %v",
					walked.Allowed, walked.Refused, server.Allowed, server.Refused, called, c.allowed)
			}
			// Only a caller that some rule names is told of reviews.
			if got, want := m.configured(t, c.caller), model.MayCall(mesh.Caller{Namespace: ns, ServiceAccount: sa}, model.Services["bookinfo/reviews"]); got != want {
				t.Errorf("its xDS client was told of reviews: %v, want %v", got, want)
			}
		})
	}
}

// A service without allow rules follows the default inbound policy of its
// namespace's label: all lets both callers in, namespace only the one of
// the service's own namespace, deny neither. The walk through the
// sidecar's inbound configuration and a grpc-go xDS server enforcing
// weft's server Listener decide alike, and each caller's xDS client is
// told of reviews exactly when the policy lets it in.
func TestDefaultInboundAgreesWithGRPC(t *testing.T) {
	var base mesh.Input
	m := startMTLSReviews(t, func(port int32) mesh.Input {
		base = strictReviews(port)
		return base
	})
	for _, tc := range []struct {
		policy       wire.DefaultInbound
		own, otherNs bool
	}{
		{wire.DefaultInboundAll, true, true},
		{wire.DefaultInboundNamespace, true, false},
		{wire.DefaultInboundDeny, false, false},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			in := base
			in.Namespaces = []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Labels: map[string]string{wire.LabelDefaultInbound: string(tc.policy)}}}}
			model := mesh.Build(in)
			_, sidecar := reviewsSidecar(t, model, mtlsOptions)
			m.server.OnModel(m.ctx, model)
			for caller, want := range map[string]bool{"bookinfo/productpage": tc.own, "ops/debugger": tc.otherNs} {
				ns, sa, _ := strings.Cut(caller, "/")
				walked, err := sidecar.SidecarInbound(uint32(m.port), walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", ns, sa)},
					walk.Request{Method: "POST", Path: "/weft.test.Reviews/Get", Authority: target})
				if err != nil {
					t.Fatal(err)
				}
				if walked.Allowed != want {
					t.Errorf("%s: the walk let it in: %v (%s), want %v", caller, walked.Allowed, walked.Refused, want)
				}
				eventually(t, caller+": grpc-go's RBAC let it in", want, func() bool { return m.invoke(t, caller, "/weft.test.Reviews/Get") })
				// Scoping: a caller the policy lets in is told of reviews,
				// and only such a caller.
				m.eventuallyTold(t, caller, want)
			}
		})
	}
}

// mtlsOptions are the options of a mesh on mTLS: sidecars with SDS
// certificates, proxyless workloads with their pod certificates.
// (whose proxies say so: Delivery on the proxy, or the server's Delivery).
var mtlsOptions = translate.Options{EnvoyCerts: translate.EnvoyCertsSDS}

// strictReviews is the reviews fixture with both subsets' endpoints on
// one port of 127.0.0.2, STRICT mTLS in bookinfo, and every call to v1.
func strictReviews(port int32) mesh.Input {
	in := reviews("127.0.0.2", "127.0.0.3", port, port, meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{
		{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}}}}})
	in.PeerAuthentications = append(in.PeerAuthentications, xdstest.StrictPeerAuthentication("bookinfo"))
	// The callers' pods, each running as its own ServiceAccount.
	for _, c := range mtlsCallers {
		in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: c[0], Name: c[1]}, Spec: corev1.PodSpec{ServiceAccountName: c[1]}})
	}
	return in
}

// mtlsCallers are the namespaces and ServiceAccounts of mtlsMesh's
// callers; each runs in a pod of the ServiceAccount's name.
var mtlsCallers = [][2]string{{"bookinfo", "productpage"}, {"bookinfo", "details"}, {"ops", "debugger"}}

// mtlsMesh is reviews-v1 as a grpc-go xDS server on mTLS, configured by
// weft's xDS server, and, for each of bookinfo/productpage,
// bookinfo/details and ops/debugger, a grpc-go xDS client with its pod's
// node id and certificate (configured with what its identity may call)
// and a direct channel to reviews-v1 with the same certificate (a caller
// that ignores the mesh's configuration, which only the server's RBAC
// stops).
type mtlsMesh struct {
	ctx     context.Context
	port    int32
	server  *server.Server
	clients map[string]*xdstest.Client
	direct  map[string]*xdstest.Client
}

// startMTLSReviews starts an mtlsMesh serving the model of input (given
// the backend's port), with certificates from a CA of the test's own.
func startMTLSReviews(t *testing.T, input func(port int32) mesh.Input) *mtlsMesh {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mtlsMesh{port: int32(lis.Addr().(*net.TCPAddr).Port), clients: map[string]*xdstest.Client{}, direct: map[string]*xdstest.Client{}}
	ca, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certsOf := func(ns, sa string) xdstest.Certs {
		return xdstest.IssueCerts(t, ca, filepath.Join(dir, ns+"-"+sa), identity.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa})
	}
	var ads string
	// The workloads' bootstraps say no delivery: the server's applies.
	m.server, ads, m.ctx = serve(t, server.Options{Delivery: wire.DeliveryPodCertificate}, mesh.Build(input(m.port)))
	xdstest.StartXDSBackend(t, lis, ads, "reviews-v1.bookinfo", "reviews-v1", certsOf("bookinfo", "reviews-v1"), 0)
	for _, c := range mtlsCallers {
		certs := certsOf(c[0], c[1])
		m.clients[c[0]+"/"+c[1]] = xdstest.NewMTLSClient(t, ads, wire.NodeID(c[1], c[0]), target, certs)
		m.direct[c[0]+"/"+c[1]] = xdstest.DialDirect(t, lis.Addr().String(), certs)
	}
	return m
}

// invoke calls a method of reviews-v1 directly as a caller
// ("<namespace>/<service account>") and says whether the call went
// through; a failure other than the server's RBAC refusing it fails the
// test.
func (m *mtlsMesh) invoke(t *testing.T, caller, method string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	err := m.direct[caller].Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{}, grpc.WaitForReady(true))
	if err != nil && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("%s: grpc-go's call failed otherwise than by its RBAC: %v", caller, err)
	}
	return err == nil
}

// configured says whether a caller's xDS client was told of reviews: its
// call goes through or is refused by the server's RBAC (true), or its
// client has no listener for the target (false): it was removed, or never
// came (grpc-go waits 15 s before it calls a listener it was never sent
// missing; a configured client calls within milliseconds). Anything else
// fails the test.
func (m *mtlsMesh) configured(t *testing.T, caller string) bool {
	t.Helper()
	told, err := m.told(caller)
	if err != nil {
		t.Fatal(err)
	}
	return told
}

// told is configured's answer, or an error when the call failed in
// another way.
func (m *mtlsMesh) told(caller string) (bool, error) {
	ctx, cancel := context.WithTimeout(m.ctx, 8*time.Second)
	defer cancel()
	_, err := m.clients[caller].Ask(ctx, grpc.WaitForReady(true))
	switch {
	case err == nil || status.Code(err) == codes.PermissionDenied:
		return true, nil
	case strings.Contains(err.Error(), "ListenerResource"), err.Error() == status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error()).Error():
		return false, nil
	}
	return false, fmt.Errorf("%s: its xDS client failed otherwise than for want of a listener or by RBAC: %w", caller, err)
}

// eventuallyTold waits until a caller's xDS client is told of reviews or
// not, as want says. While a new scope reaches the client, a call may
// fail in passing (a route whose cluster was just taken away: "unknown
// cluster selected"); such a failure is retried, and reported only if the
// client never settles.
func (m *mtlsMesh) eventuallyTold(t *testing.T, caller string, want bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		told, err := m.told(caller)
		if err == nil && told == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: its xDS client was never told of reviews = %v (last: told %v, %v)", caller, want, told, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually waits until a caller's decision (invoke or configured) is
// want: a new model reaches the clients and the server with a push, and
// the server drains connections that began under the old Listener.
func eventually(t *testing.T, what string, want bool, decide func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for decide() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never %v", what, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The same kind of bypass attempts against grpc-go, with real calls over
// mTLS to a grpc-go xDS server enforcing weft's server Listener: productpage
// may call Reviews/Get and anything under /weft.test.Public/. grpc-go
// neither normalizes a path nor resolves it: its RBAC judges the path as
// sent and the server dispatches on the same string, so every odd spelling
// of Get is refused (by the RBAC, or as a malformed method name), and what
// is let in under the prefix is handed to the application exactly as
// judged.
func TestPathBypassesAgainstGRPC(t *testing.T) {
	m := startMTLSReviews(t, func(port int32) mesh.Input {
		in := strictReviews(port)
		in.MeshServices[0].Spec.Allow = []meshv1.AllowRule{{
			From: []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "productpage"}},
			Paths: []meshv1.PathMatch{{Type: meshv1.MatchExact, Value: "/weft.test.Reviews/Get"},
				{Type: meshv1.MatchPrefix, Value: "/weft.test.Public/"}},
		}}
		return in
	})
	for _, c := range []struct {
		path    string
		allowed bool
	}{
		{"/weft.test.Reviews/Get", true},
		{"/weft.test.Reviews/New", false},
		{"/weft.test.Reviews/Get/../New", false},
		{"/weft.test.Reviews/New/../Get", false},
		{"/weft.test.Reviews/./Get", false},
		{"//weft.test.Reviews/Get", false},
		{"/weft.test.Reviews//Get", false},
		{"/weft.test.Reviews/%47et", false},
		{"/weft.test.Reviews/get", false},
		{"/WEFT.TEST.REVIEWS/Get", false},
		{"/weft.test.Reviews/Get/", false},
		{"/weft.test.Reviews%2fGet", false},
		{"/weft.test.Public/Read", true},
		{"/weft.test.Public/../weft.test.Reviews/New", true},
		{"/weft.test.Public/..%2fweft.test.Reviews/New", true},
	} {
		t.Run(c.path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
			defer cancel()
			var md metadata.MD
			err := m.direct["bookinfo/productpage"].Invoke(ctx, c.path, &emptypb.Empty{}, &emptypb.Empty{}, grpc.WaitForReady(true), grpc.Header(&md))
			switch {
			case c.allowed && err != nil:
				t.Fatalf("refused: %v", err)
			case !c.allowed && status.Code(err) != codes.PermissionDenied &&
				(status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "malformed method name")):
				// A path with no slash after the service is refused
				// before the RBAC, as a malformed method name.
				t.Fatalf("%v, want PERMISSION_DENIED from the server's RBAC", err)
			}
			// What was let in reaches the application as it was judged.
			if got := md.Get("method"); c.allowed && (len(got) != 1 || got[0] != c.path) {
				t.Errorf("the application was called with %v, the RBAC judged %s", got, c.path)
			}
		})
	}
}
