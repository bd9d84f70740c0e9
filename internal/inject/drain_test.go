package inject

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/internal/testenv/kubelet"
	"github.com/weftmesh/weft/internal/wire"
)

// A sidecar's pod waits on the drain endpoint: every app container
// without a pre-stop of its own gets a GET of the drain path on the
// proxy's health port, whose route sends it to the controller's drain
// port over TLS with the sidecar's SDS certificate, naming the pod as the
// kubelet expands it; a container's own pre-stop stays; with no drain port
// nothing is added. A proxyless pod is told the endpoint's URL.
func TestDrainWait(t *testing.T) {
	pod := testPod()
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "own", Image: "app",
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"stop"}}}}})
	cfg := DefaultConfig()
	if err := Inject(pod, cfg); err != nil {
		t.Fatal(err)
	}
	app, own := pod.Spec.Containers[0], pod.Spec.Containers[1]
	if h := app.Lifecycle.PreStop.HTTPGet; h == nil || h.Path != wire.DrainPath || h.Port.IntValue() != wire.PortHealth {
		t.Errorf("the app container's pre-stop: %+v", app.Lifecycle.PreStop)
	}
	if own.Lifecycle.PreStop.Exec == nil || own.Lifecycle.PreStop.HTTPGet != nil {
		t.Errorf("a container's own pre-stop was replaced: %+v", own.Lifecycle.PreStop)
	}

	b, err := Bootstrap(cfg, Workload{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var hcm hcmv3.HttpConnectionManager
	for _, l := range b.GetStaticResources().GetListeners() {
		if l.GetName() == "weft-health" {
			if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
		}
	}
	var routed bool
	for _, r := range hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
		if r.GetMatch().GetPath() != wire.DrainPath {
			continue
		}
		routed = r.GetRoute().GetCluster() == clusterDrain && r.GetRoute().GetTimeout().AsDuration() == 0
		h := r.GetRequestHeadersToAdd()
		if len(h) != 1 || h[0].GetHeader().GetKey() != wire.DrainNodeHeader {
			t.Fatalf("the drain route's headers: %v", h)
		}
		// The kubelet expands the pod's variables in the proxy's
		// arguments, where the bootstrap is.
		expanded := expandArg(t, pod, h[0].GetHeader().GetValue())
		if expanded != wire.NodeID(pod.Name, pod.Namespace) {
			t.Errorf("the drain route names %q, want the pod's node id", expanded)
		}
	}
	if !routed {
		t.Errorf("no route of the health listener sends %s to %s", wire.DrainPath, clusterDrain)
	}
	var c *clusterv3.Cluster
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() == clusterDrain {
			c = cl
		}
	}
	if c == nil {
		t.Fatal("no drain cluster")
	}
	addr := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if addr.GetAddress() != cfg.XDSHost || addr.GetPortValue() != uint32(cfg.DrainPort) {
		t.Errorf("the drain cluster reaches %v", addr)
	}
	var up tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
		t.Fatal(err)
	}
	sds := up.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	if up.GetSni() != cfg.XDSHost || len(sds) != 1 || sds[0].GetName() != wire.SDSCertificate || sds[0].GetSdsConfig().GetAds() == nil ||
		up.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename() != wire.RootsFile {
		t.Errorf("the drain cluster's TLS: %v", &up)
	}

	off := cfg
	off.DrainPort = 0
	quiet := testPod()
	if err := Inject(quiet, off); err != nil {
		t.Fatal(err)
	}
	if quiet.Spec.Containers[0].Lifecycle != nil {
		t.Errorf("with no drain port: %+v", quiet.Spec.Containers[0].Lifecycle)
	}
	if boot, _ := RenderBootstrap(off, Workload{}, nil); strings.Contains(boot, clusterDrain) {
		t.Error("with no drain port, the bootstrap has a drain cluster")
	}

	grpc := testPod()
	grpc.Annotations = map[string]string{AnnotationProxy: string(wire.FlavourGRPC)}
	if err := Inject(grpc, cfg); err != nil {
		t.Fatal(err)
	}
	var url string
	for _, e := range grpc.Spec.Containers[0].Env {
		if e.Name == wire.EnvDrainURL {
			url = e.Value
		}
	}
	if url != "https://weft-controller.weft-system.svc:15014/drain" {
		t.Errorf("a proxyless pod's %s: %q", wire.EnvDrainURL, url)
	}
}

// expandArg expands a value as the kubelet expands the proxy's arguments,
// from the proxy container's environment.
func expandArg(t *testing.T, pod *corev1.Pod, v string) string {
	t.Helper()
	var proxy corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if c.Name == ProxyContainer {
			proxy = c
		}
	}
	probe := proxy
	probe.Env = append(append([]corev1.EnvVar(nil), proxy.Env...), corev1.EnvVar{Name: "WEFT_TEST_VALUE", Value: v})
	env, err := kubelet.Env(pod, probe)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range env {
		if s, ok := strings.CutPrefix(kv, "WEFT_TEST_VALUE="); ok {
			return s
		}
	}
	t.Fatal("the value was not expanded")
	return ""
}
