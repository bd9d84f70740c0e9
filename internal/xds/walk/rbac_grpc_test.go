package walk_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

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
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(lis.Addr().(*net.TCPAddr).Port)
	in := reviews("127.0.0.2", "127.0.0.3", port, port, meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{
		{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}}}}})
	in.MeshServices[0].Spec.Allow = []meshv1.AllowRule{
		{From: []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "productpage"}},
			Paths: []meshv1.PathMatch{{Type: meshv1.MatchExact, Value: "/weft.test.Reviews/Get"}}, Methods: []meshv1.HTTPMethod{"POST"}},
		{From: []meshv1.Source{{Namespace: "ops"}}},
	}
	in.PeerAuthentications = append(in.PeerAuthentications, xdstest.StrictPeerAuthentication("bookinfo"))
	model := mesh.Build(in)

	// The sidecars' view of the same mesh and pod.
	sh, sidecar := reviewsSidecar(t, model, translate.Options{EnvoyCerts: translate.EnvoyCertsSDS, ProxylessMTLS: true})

	ca, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certsOf := func(ns, sa string) xdstest.Certs {
		return xdstest.IssueCerts(t, ca, filepath.Join(dir, ns+"-"+sa), identity.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa})
	}
	_, ads, ctx := serve(t, server.Options{ProxylessMTLS: true}, model)
	xdstest.StartXDSBackend(t, lis, ads, "reviews-v1.bookinfo", "reviews-v1", certsOf("bookinfo", "reviews-v1"), 0)

	clients := map[string]*xdstest.Client{}
	for _, c := range [][2]string{{"bookinfo", "productpage"}, {"bookinfo", "details"}, {"ops", "debugger"}} {
		clients[c[0]+"/"+c[1]] = xdstest.NewMTLSClient(t, ads, c[1]+"."+c[0], target, certsOf(c[0], c[1]))
	}
	// Outbound: what the client checked on the server.
	answer, err := clients["bookinfo/productpage"].Ask(ctx, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	req := walk.Request{Target: target, DestinationIP: clusterIP, DestinationPort: 9080, Authority: target, Method: "POST", Path: "/weft.test.Reviews/Get"}
	for flavour, walkOf := range map[wire.Flavour]func(walk.Request) (*walk.Result, error){
		wire.FlavourGRPC: walk.New(sh.GRPC).Proxyless, wire.FlavourEnvoy: walk.New(sh.Envoy).Sidecar} {
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
			callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			err = clients[c.caller].Invoke(callCtx, c.method, &emptypb.Empty{}, &emptypb.Empty{}, grpc.WaitForReady(true))
			called := err == nil
			if err != nil && status.Code(err) != codes.PermissionDenied {
				t.Fatalf("grpc-go's call failed otherwise than by its RBAC: %v", err)
			}
			if walked.Allowed != c.allowed || called != c.allowed {
				t.Errorf("the walk let it in: %v (%s); grpc-go: %v (%v); want %v", walked.Allowed, walked.Refused, called, err, c.allowed)
			}
		})
	}
}
