package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestRejectedConfigurationKeepsTraffic follows a configuration that
// passes admission and every check weft makes, and that a proxy rejects,
// from the API server to the proxy and back: a grpc-go xDS server whose
// node says it holds pod certificates, though its bootstrap has no
// certificate provider (an application that replaced the bootstrap weft
// injected), is put under a STRICT PeerAuthentication. weft sends it a
// Listener with TLS naming the provider; grpc-go refuses it. The server
// goes on with the last Listener it took, a client's calls go on without
// one failing, the PeerAuthentication says Ready=False Rejected with the
// proxy and grpc-go's error within 30 s, weft_xds_nacks_total moves, and
// weft sends no Listener again until the configuration changes.
func TestRejectedConfigurationKeepsTraffic(t *testing.T) {
	const serverIP = "192.0.2.91"
	if !testenv.InOwnNetworkNamespace(t, serverIP) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	env, ads := startController(ctx, t)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const ns = "fragile"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	must(c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}))
	for _, name := range []string{"reviews-v1", "client"} {
		must(c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": strings.TrimSuffix(name, "-v1")}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
	}
	lis, err := net.Listen("tcp", serverIP+":0")
	must(err)
	must(c.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "reviews-v1", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(int32(lis.Addr().(*net.TCPAddr).Port))}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{serverIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "reviews-v1"}}},
	}))
	// The server's bootstrap says pod certificates in its node metadata,
	// as the injector writes it, but lost the provider that goes with them.
	bootstrap, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{"server_uri": ads, "channel_creds": []any{map[string]any{"type": "insecure"}}, "server_features": []any{"xds_v3"}}},
		"node": map[string]any{"id": "reviews-v1." + ns, "metadata": map[string]any{
			wire.MetaFlavour: string(wire.FlavourGRPC), wire.MetaCertDelivery: string(wire.DeliveryPodCertificate)}},
		"server_listener_resource_name_template": wire.ServerListenerName("%s"),
	})
	must(err)
	xdstest.StartXDSBackendFrom(t, lis, bootstrap, "reviews-v1", 0)
	cl := xdstest.NewClient(t, ads, "client."+ns, "reviews."+ns+".svc.cluster.local:9080")
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := cl.Call(callCtx, grpc.WaitForReady(true))
		return err
	}))

	// Calls without pause from here on.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for loadCtx.Err() == nil {
			callCtx, cancel := context.WithTimeout(loadCtx, 5*time.Second)
			_, err := cl.Call(callCtx)
			cancel()
			if loadCtx.Err() != nil {
				return
			}
			sent.Add(1)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	defer func() {
		stopLoad()
		wg.Wait()
	}()

	nacksBefore := counter(t, "weft_xds_nacks_total", map[string]string{"type_url": resource.ListenerType})
	pa := &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "strict"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}
	must(c.Create(ctx, pa))
	applied := time.Now()
	var ready *metav1.Condition
	must(testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pa), pa); err != nil {
			return err
		}
		ready = meta.FindStatusCondition(pa.Status.Conditions, meshv1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != meshv1.ReasonRejected {
			return fmt.Errorf("Ready is %+v", ready)
		}
		return nil
	}))
	took := time.Since(applied)
	if !strings.Contains(ready.Message, "reviews-v1."+ns) || !strings.Contains(ready.Message, "missing in bootstrap") {
		t.Errorf("Ready=False Rejected says %q; want the proxy and grpc-go's error", ready.Message)
	}
	if got := counter(t, "weft_xds_nacks_total", map[string]string{"type_url": resource.ListenerType}) - nacksBefore; got < 1 {
		t.Errorf("weft_xds_nacks_total{type_url=Listener} moved by %v, want at least 1", got)
	}

	// Nothing is sent again while nothing changes: no Listener for 10 s.
	pushes := counter(t, "weft_xds_pushes_total", map[string]string{"type_url": resource.ListenerType})
	time.Sleep(10 * time.Second)
	if got := counter(t, "weft_xds_pushes_total", map[string]string{"type_url": resource.ListenerType}) - pushes; got != 0 {
		t.Errorf("%v Listeners sent in the 10 s after the NACK, with nothing changed; want none", got)
	}

	// The change that undoes it: the server takes its next Listener, and
	// the policy no longer shapes any proxy.
	must(c.Delete(ctx, pa))
	must(testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		var ms meshv1.MeshService
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "reviews"}, &ms); err != nil {
			return err
		}
		if r := meta.FindStatusCondition(ms.Status.Conditions, meshv1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue {
			return fmt.Errorf("reviews' Ready is %+v", r)
		}
		return nil
	}))
	stopLoad()
	wg.Wait()
	if sent.Load() == 0 || failed.Load() > 0 {
		t.Errorf("%d of %d calls failed (the first: %v)", failed.Load(), sent.Load(), firstErr.Load())
	}
	t.Logf("rejected: Ready=False %s %v after the policy was applied (%q); %d calls, %d failed", ready.Reason, took.Round(100*time.Millisecond),
		ready.Message, sent.Load(), failed.Load())
}

// counter sums a counter of the controller's registry over the series
// whose labels include labels.
func counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
