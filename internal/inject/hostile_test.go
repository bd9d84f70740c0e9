package inject_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/inject"
)

// refusal creates p (a server-side dry run) and returns the injector's
// refusal; the test fails when the pod is not refused by the injector.
func refusal(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	err := env.Client.Create(context.Background(), p, client.DryRunAll)
	const denied = `admission webhook "inject.mesh.weft.dev" denied the request: `
	if err == nil || !strings.Contains(err.Error(), denied) {
		t.Fatalf("pod %s: want the injector's refusal, got %v", p.Name, err)
	}
	return err.Error()
}

// A pod that already uses a name or mount path injection adds is refused
// by the injector naming the field, not by the API server for a
// duplicate it cannot explain.
func TestInjectionNamesAreNotTaken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*corev1.Pod)
		want   string
	}{
		{"init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: inject.InitContainer, Image: "busybox"}}
		}, `spec.initContainers[0].name: "weft-init" is the name of the container the injector adds`},
		{"token volume", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data"}, {Name: inject.VolumeToken}}
			for i := range p.Spec.Volumes {
				p.Spec.Volumes[i].EmptyDir = &corev1.EmptyDirVolumeSource{}
			}
		}, `spec.volumes[1].name: "weft-token" is the name of a volume the injector adds`},
		{"proxy volume", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: inject.VolumeProxy, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}, `spec.volumes[0].name: "weft-proxy" is the name of a volume the injector adds`},
		{"proxyless mount path", func(p *corev1.Pod) {
			p.Annotations = map[string]string{inject.AnnotationProxy: "grpc"}
			p.Spec.Volumes = []corev1.Volume{{Name: "mine", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "mine", MountPath: "/var/run/secrets/weft/token"}}
		}, `spec.containers[0].volumeMounts[0].mountPath: /var/run/secrets/weft/token is where the injector mounts weft's identity files`},
	} {
		p := pod("taken")
		tc.change(p)
		// Valid where nothing is injected.
		alone := p.DeepCopy()
		alone.Namespace = unmeshed
		if err := env.Client.Create(context.Background(), alone, client.DryRunAll); err != nil {
			t.Fatalf("%s: the pod is invalid on its own: %v", tc.name, err)
		}
		if msg := refusal(t, p); !strings.Contains(msg, tc.want) || !strings.Contains(msg, "mesh.weft.dev/inject=false") {
			t.Errorf("%s: want %q and the way to opt out, got %s", tc.name, tc.want, msg)
		}
	}
}

// A proxy image with a space or a control character is refused by the
// injector naming the annotation, not by the API server naming a
// container the user did not write.
func TestProxyImageIsAnImage(t *testing.T) {
	for _, v := range []string{" envoy:1", "envoy:1\n", "registry.example/envoy:1\nimage: x", "envoy\x00", "\u2028envoy"} {
		p := pod("image")
		p.Annotations = map[string]string{inject.AnnotationProxyImage: v}
		if msg := refusal(t, p); !strings.Contains(msg, "annotation mesh.weft.dev/proxy-image: ") || !strings.Contains(msg, "is not an image reference") {
			t.Errorf("%q: %s", v, msg)
		}
	}
}

// The injector's refusal of a huge annotation value quotes only its
// beginning: the refusal, and the log line that records it, stay short.
func TestRefusalsStayShort(t *testing.T) {
	huge := strings.Repeat("x", 100000)
	for _, key := range []string{inject.AnnotationProxy, inject.AnnotationExcludeInboundPorts, inject.AnnotationExcludeOutboundPorts,
		inject.AnnotationExcludeOutboundCIDRs, inject.AnnotationProxyImage, inject.AnnotationProxyCPURequest, inject.AnnotationProxyMemoryLimit} {
		p := pod("huge")
		p.Annotations = map[string]string{key: huge + " "}
		msg := refusal(t, p)
		if !strings.Contains(msg, "annotation "+key+`: "xxxx`) || !strings.Contains(msg, "characters more") || len(msg) > 512 {
			t.Errorf("%s: a refusal of %d bytes: %.600s", key, len(msg), msg)
		}
	}
}
