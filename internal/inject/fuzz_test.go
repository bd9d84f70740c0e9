package inject

import (
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
)

// FuzzInject feeds pods with arbitrary weft annotations and containers to
// the injector: it never panics; an error names an annotation and leaves
// the pod as it was; an injected pod is marked, keeps the application's
// containers, and injects the same way twice.
func FuzzInject(f *testing.F) {
	f.Add("envoy", "8080,9090", "22", "10.0.0.0/8", "100m", "512Mi", []byte(`[{"name":"app","image":"app","ports":[{"containerPort":8080}]}]`))
	f.Add("grpc", "", "", "", "", "", []byte(`[{"name":"app","image":"app"}]`))
	f.Add("sidecar", "99999", "x", "10.0.0.0/33", "lots", "-1", []byte(`[]`))
	f.Fuzz(func(t *testing.T, proxy, inbound, outbound, cidrs, cpu, memory string, containers []byte) {
		pod := testPod()
		if json.Unmarshal(containers, &pod.Spec.Containers) != nil {
			return
		}
		pod.Annotations = map[string]string{AnnotationProxy: proxy, AnnotationExcludeInboundPorts: inbound,
			AnnotationExcludeOutboundPorts: outbound, AnnotationExcludeOutboundCIDRs: cidrs,
			AnnotationProxyCPURequest: cpu, AnnotationProxyMemoryLimit: memory}
		before := pod.DeepCopy()
		if err := Inject(pod, DefaultConfig()); err != nil {
			if !strings.Contains(err.Error(), "mesh.weft.dev/") {
				t.Fatalf("an injection error names no annotation: %v", err)
			}
			if !equality.Semantic.DeepEqual(pod, before) {
				t.Fatal("a refused pod was changed")
			}
			return
		}
		if pod.Annotations[AnnotationInjected] == "" {
			t.Fatal("an injected pod is not marked")
		}
		for _, c := range before.Spec.Containers {
			if !hasContainer(pod.Spec.Containers, c.Name) {
				t.Fatalf("the application's container %q is gone", c.Name)
			}
		}
		again := before.DeepCopy()
		if err := Inject(again, DefaultConfig()); err != nil || !equality.Semantic.DeepEqual(pod, again) {
			t.Fatalf("the same pod injected twice differs (%v)", err)
		}
	})
}
