package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/cli"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestMeshFromKubernetesObjects: with the controller (reconcilers, model
// watcher, xDS server) running against the real API server, grpc-go xDS
// clients configured only by weft reach a service by name; a TrafficPolicy
// splits traffic 90/10; scaling endpoints moves traffic within a second;
// a deleted MeshService fails fast with UNAVAILABLE.
func TestMeshFromKubernetesObjects(t *testing.T) {
	if !testenv.InOwnNetworkNamespace(t, "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	env, ads := startController(ctx, t)

	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Status writers update these objects too: edit the latest version.
	edit := func(o client.Object, change func()) {
		t.Helper()
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
				return err
			}
			change()
			return c.Update(ctx, o)
		}))
	}
	ns := "shop"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews",
		Ports:       []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}},
		Subsets: []meshv1.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		},
	}}
	must(c.Create(ctx, ms))

	// Backends on the test namespace's loopback (documentation-range
	// addresses), published as pods and EndpointSlices: the test plays the
	// kubelet and the endpoints controller.
	// addBackend returns when the EndpointSlice was created.
	addBackend := func(name, version, ip string, failEvery int64) time.Time {
		t.Helper()
		port := xdstest.StartFlakyBackend(t, ip+":0", name, failEvery)
		must(c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{"app": "reviews", "version": version}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
		must(c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(port)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}}},
		}))
		return time.Now()
	}
	addBackend("reviews-v1", "v1", "192.0.2.11", 0)
	addBackend("reviews-v2", "v2", "192.0.2.12", 0)

	cl := xdstest.NewClient(t, ads, "client-1.shop", "reviews.shop.svc.cluster.local:9080")
	if _, err := cl.Call(ctx, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("the client never reached the service by name: %v", err)
	}

	// The MeshService's status counts the proxy, once it acknowledged.
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
			return err
		}
		ready := meta.FindStatusCondition(ms.Status.Conditions, meshv1.ConditionReady)
		if ms.Status.Proxies.Total != 1 || ms.Status.Proxies.Synced != 1 || ready == nil || ready.Status != metav1.ConditionTrue ||
			ready.ObservedGeneration != ms.Generation {
			return fmt.Errorf("status.proxies %+v, Ready %+v", ms.Status.Proxies, ready)
		}
		return nil
	}))

	// 90/10 by TrafficPolicy.
	tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "canary"}, Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Name: "reviews"},
		HTTP:      []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}}}},
	}}
	must(c.Create(ctx, tp))
	// Ready turns True only once the proxy acknowledged the policy.
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
			return err
		}
		ready := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != tp.Generation ||
			ready.Message != "All 1 proxies have acknowledged generation 1" {
			return fmt.Errorf("Ready %+v", ready)
		}
		return nil
	}))
	share := func(n int) (map[string]int, error) {
		counts := map[string]int{}
		for range n {
			got, err := cl.Call(ctx)
			if err != nil {
				return nil, err
			}
			counts[got]++
		}
		return counts, nil
	}
	// The split is in force once a sample stops looking 50/50.
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		counts, err := share(400)
		if err != nil {
			return err
		}
		if counts["reviews-v1"] < 320 {
			return fmt.Errorf("not split yet: %v", counts)
		}
		return nil
	}))
	// weft status shows the client synced on every type, once its last
	// acknowledgement is in.
	synced := regexp.MustCompile(`client-1\.shop\s+grpc\s+synced \(\w+\)\s+synced \(\w+\)\s+synced \(\w+\)\s+synced \(\w+\)\s+-`)
	if err := waitStatus(ctx, ads, synced, "the client as synced"); err != nil {
		t.Error(err)
	}
	counts, err := share(10000)
	must(err)
	pct := 100 * float64(counts["reviews-v1"]) / 10000
	t.Logf("after the policy: %v (v1 %.2f%%)", counts, pct)
	if pct < 88 || pct > 92 {
		t.Errorf("v1 got %.2f%%, want 90 ± 2", pct)
	}

	// Every field the policy sets is honoured by the grpc-go client; one it
	// ignores is named on the policy with the flavour and the count.
	honoured := func(status metav1.ConditionStatus, msg string) error {
		return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
				return err
			}
			h := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionHonoured)
			if h == nil || h.Status != status || h.ObservedGeneration != tp.Generation || !strings.Contains(h.Message, msg) {
				return fmt.Errorf("Honoured %+v", h)
			}
			return nil
		})
	}
	must(honoured(metav1.ConditionTrue, "Every connected proxy"))
	edit(tp, func() {
		tp.Spec.ConnectionPool = &meshv1.ConnectionPool{MaxRequests: ptr.To[int32](100), MaxConnections: ptr.To[int32](10)}
	})
	must(honoured(metav1.ConditionFalse, "1 proxyless gRPC proxy (grpc) ignores spec.connectionPool.maxConnections; they apply the rest"))

	// Scale v1 up: the new endpoint gets traffic within a second of its
	// EndpointSlice (the bound of the wait only reports a miss).
	start := addBackend("reviews-v1b", "v1", "192.0.2.13", 0)
	must(testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		got, err := cl.Call(ctx)
		if err != nil || got != "reviews-v1b" {
			return fmt.Errorf("went to %q (%v)", got, err)
		}
		return nil
	}))
	if d := time.Since(start); d > time.Second {
		t.Errorf("the new endpoint took %v to get traffic, want under 1s", d)
	} else {
		t.Logf("the new endpoint got traffic after %v", d)
	}

	// Retries from the TrafficPolicy, through the API server to grpc-go: a
	// version that fails a third of its calls with UNAVAILABLE shows those
	// failures until the policy retries them, then none.
	edit(ms, func() {
		ms.Spec.Subsets = append(ms.Spec.Subsets, meshv1.Subset{Name: "v3", Labels: map[string]string{"version": "v3"}})
	})
	addBackend("reviews-v3", "v3", "192.0.2.14", 3)
	failures := func(n int) (failed int) {
		for range n {
			if _, err := cl.Call(ctx); err != nil {
				failed++
			}
		}
		return failed
	}
	readyAt := func(gen int64) error {
		return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
				return err
			}
			ready := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady)
			if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != gen {
				return fmt.Errorf("Ready %+v", ready)
			}
			return nil
		})
	}
	edit(tp, func() {
		tp.Spec.HTTP = []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: "v3", Weight: 100}}}}
	})
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		got, err := cl.Call(ctx)
		if got != "reviews-v3" {
			return fmt.Errorf("went to %q (%v)", got, err)
		}
		return nil
	}))
	must(readyAt(tp.Generation))
	if f := failures(300); f < 60 {
		t.Fatalf("without retries %d of 300 calls to a backend failing a third failed", f)
	} else {
		t.Logf("without retries: %d of 300 calls failed", f)
	}
	edit(tp, func() {
		tp.Spec.Retries = &meshv1.RetryPolicy{Attempts: ptr.To[int32](3), RetryOn: []meshv1.RetryCondition{"unavailable"}}
	})
	must(readyAt(tp.Generation))
	// Ready means the proxy acknowledged the retries: from now on none
	// may fail.
	if f := failures(300); f > 3 {
		t.Errorf("with retries %d of 300 calls failed, want at most 1%%", f)
	} else {
		t.Logf("with retries: %d of 300 calls failed", f)
	}

	// Delete the MeshService: calls fail fast with UNAVAILABLE instead of
	// hanging.
	must(c.Delete(ctx, ms))
	must(testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		begin := time.Now()
		_, err := cl.Call(callCtx)
		if status.Code(err) != codes.Unavailable {
			return fmt.Errorf("got %v", err)
		}
		if d := time.Since(begin); d > 500*time.Millisecond {
			return fmt.Errorf("UNAVAILABLE took %v", d)
		}
		return nil
	}))
}

// startController starts an API server and the controller against it
// (reconcilers, model watcher, xDS server) until ctx ends, and returns the
// environment and the xDS server's address.
func startController(ctx context.Context, t *testing.T) (*testenv.Env, string) {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	// The controller stops before the API server.
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() {
		cancel()
		_ = env.Stop()
	})
	log := zap.New(zap.UseDevMode(false))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	recorder := mgr.GetEventRecorder("weft-controller")
	xs, err := server.New(server.Options{Address: "127.0.0.1:0", Log: log, Events: recorder})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(xs); err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(ctx, mgr, controllers.Options{MeshNamespace: "weft-system", OnModel: xs.OnModel, Proxies: xs, Events: recorder}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	ads, err := xs.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return env, ads
}

// waitStatus waits until `weft status`, run against the xDS server's
// status at ads, prints what want matches (what names it in the error).
func waitStatus(ctx context.Context, ads string, want *regexp.Regexp, what string) error {
	return testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		var out bytes.Buffer
		if err := cli.Status(ctx, ads, &out); err != nil {
			return err
		}
		if !want.MatchString(out.String()) {
			return fmt.Errorf("weft status does not show %s:\n%s", what, out.String())
		}
		return nil
	})
}

// TestStrictWithoutCertificatesIsNotReady: a STRICT PeerAuthentication
// over a grpc-go xDS server that weft can give no certificate (the
// workloads get theirs over SDS, which proxyless gRPC cannot use) is
// Ready=False, PlainText, counting that server, and the server indeed
// answers a plain-text call; made PERMISSIVE, the policy is Ready.
func TestStrictWithoutCertificatesIsNotReady(t *testing.T) {
	if !testenv.InOwnNetworkNamespace(t, "192.0.2.41") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	env, ads := startController(ctx, t)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ns := "plain"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	must(c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}))
	pa := &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}
	must(c.Create(ctx, pa))

	lis, err := net.Listen("tcp", "192.0.2.41:0")
	must(err)
	port := int32(lis.Addr().(*net.TCPAddr).Port)
	must(c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews-0", Labels: map[string]string{"app": "reviews"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
	must(c.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "reviews-0", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(port)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.41"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "reviews-0"}}},
	}))
	// No certificate files: weft's Listener asks for none.
	xdstest.StartXDSBackend(t, lis, ads, "reviews-0."+ns, "reviews-0", xdstest.Certs{Dir: t.TempDir()}, 0)

	readyIs := func(status metav1.ConditionStatus, reason, message string) {
		t.Helper()
		must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(pa), pa); err != nil {
				return err
			}
			r := meta.FindStatusCondition(pa.Status.Conditions, meshv1.ConditionReady)
			if r == nil || r.Status != status || r.Reason != reason || r.ObservedGeneration != pa.Generation || !strings.Contains(r.Message, message) {
				return fmt.Errorf("PeerAuthentication Ready: %+v, want %s %s %q", r, status, reason, message)
			}
			return nil
		}))
	}
	readyIs(metav1.ConditionFalse, meshv1.ReasonPlainText, "1 workload takes plain text on ports that this policy makes STRICT")

	// What the condition says holds on the wire: a plain-text call is
	// answered.
	plain, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	defer plain.Close()
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return plain.Invoke(callCtx, "/weft.test.Reviews/Get", &emptypb.Empty{}, &emptypb.Empty{})
	}))

	must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pa), pa); err != nil {
			return err
		}
		pa.Spec.Mode = meshv1.MTLSPermissive
		return c.Update(ctx, pa)
	}))
	readyIs(metav1.ConditionTrue, meshv1.ReasonSynced, "acknowledged generation 2")
}

// TestRejectedConfigurationIsAnEvent: when a proxy rejects what it was
// sent (a NACK), weft records a Warning Event on the proxy's pod
// (ConfigurationRejected, with the type and the proxy's words) and on the
// MeshService whose Ready turned Rejected, through the real API server's
// events.k8s.io API, where kubectl describe finds them.
func TestRejectedConfigurationIsAnEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	env, ads := startController(ctx, t)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ns := "picky"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080}}}}))
	ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}
	must(c.Create(ctx, ms))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	must(c.Create(ctx, pod))

	// A proxy of that pod asks for reviews' Listener and refuses it. (The
	// model must know the MeshService first, or the Listener would not
	// be there to refuse.)
	listener := "reviews." + ns + ".svc.cluster.local:9080"
	cc, err := grpc.NewClient(ads, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	defer cc.Close()
	var nonce string
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(sctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "client." + ns}, TypeUrl: resource.ListenerType,
			ResourceNames: []string{listener}}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if len(resp.GetResources()) == 0 {
			return errors.New("no Listener for reviews yet")
		}
		nonce = resp.GetNonce()
		// The NACK, on the stream that was sent the Listener; the stream
		// stays open until the Events are there.
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{listener},
			ResponseNonce: nonce, ErrorDetail: &rpcstatus.Status{Code: 3, Message: "listener refused by the test"}}); err != nil {
			return err
		}
		return waitEvents(ctx, c, ns)
	}))
}

// waitEvents waits until the Events of a NACK are in the namespace: one
// on the pod, one on the MeshService.
func waitEvents(ctx context.Context, c client.Client, ns string) error {
	return testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		onPod, onService := false, false
		for _, ev := range list.Items {
			switch {
			case ev.Regarding.Kind == "Pod" && ev.Regarding.Name == "client" && ev.Reason == wire.EventConfigurationRejected &&
				ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Note, "rejected type.googleapis.com/envoy.config.listener.v3.Listener") &&
				strings.Contains(ev.Note, "listener refused by the test"):
				onPod = true
			case ev.Regarding.Kind == "MeshService" && ev.Regarding.Name == "reviews" && ev.Reason == meshv1.ReasonRejected &&
				ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Note, "listener refused by the test"):
				onService = true
			}
		}
		if !onPod || !onService {
			return fmt.Errorf("Events on the pod: %v, on the MeshService: %v (all: %d)", onPod, onService, len(list.Items))
		}
		return nil
	})
}
