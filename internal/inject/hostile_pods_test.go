package inject_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/inject"
)

// warnings collects the warnings the API server passes on (the webhook's
// reason for not injecting is one).
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.seen
	w.seen = nil
	return out
}

// hostileValues are odd values for weft's annotations: empty, spaces,
// control characters, Unicode, lists gone wrong, numbers out of range, a
// quantity's edge cases, and long ones.
func hostileValue(r *rand.Rand) string {
	fixed := []string{"", " ", "\t", "\n", "\x00", "envoy\n", " grpc", "ENVOY", "é", "🙂", "\u202e", "\u200b",
		",", ",,,", "1,", "0", "-1", "65536", "99999999999999999999", "1-2", "80 443", "80;rm -rf /",
		"10.0.0.0/33", "::/129", "0.0.0.0/0", "10.0.0.1", "fe80::1%eth0/64", "1e3", "1E400", "0.000000001m", "-0",
		"100Gi", "1Pi", "NaN", "Infinity", "0x10", "${HOME}", "$(WEFT_POD_NAME)", "'; DROP TABLE", "<script>",
		"registry.example/envoy:1\nimage: evil", "a b", strings.Repeat("8", 1000), strings.Repeat("1,", 5000)}
	if r.IntN(4) > 0 {
		return fixed[r.IntN(len(fixed))]
	}
	const alphabet = "aZ09-./_ ,:;@%$\\\"'`\t\n\x00é漢🙂"
	runes := []rune(alphabet)
	n := 1 + r.IntN(64)
	if r.IntN(10) == 0 {
		n = 1 + r.IntN(60000)
	}
	var b strings.Builder
	for range n {
		b.WriteRune(runes[r.IntN(len(runes))])
	}
	return b.String()
}

var weftAnnotations = []string{inject.AnnotationProxy, inject.AnnotationExcludeInboundPorts, inject.AnnotationExcludeOutboundPorts,
	inject.AnnotationExcludeOutboundCIDRs, inject.AnnotationProxyImage, inject.AnnotationProxyCPURequest,
	inject.AnnotationProxyMemoryRequest, inject.AnnotationProxyCPULimit, inject.AnnotationProxyMemoryLimit}

// hostilePod is a pod a user could write: odd weft annotations, many
// other annotations, a huge spec (many containers, each with many ports,
// variables and a long command), names weft uses for what it adds, the
// host's network, probes on named ports. It is a valid pod as the API
// server sees it, so that whatever refuses it is the injector.
func hostilePod(r *rand.Rand, i int) (*corev1.Pod, string) {
	p := pod(fmt.Sprintf("hostile-%d", i))
	var what []string
	p.Annotations = map[string]string{}
	for range r.IntN(4) {
		k := weftAnnotations[r.IntN(len(weftAnnotations))]
		p.Annotations[k] = hostileValue(r)
		what = append(what, fmt.Sprintf("%s=%.20q", k, p.Annotations[k]))
	}
	if r.IntN(3) == 0 {
		n := 1 + r.IntN(2000)
		for j := range n {
			p.Annotations[fmt.Sprintf("example.com/a%d", j)] = strings.Repeat("v", r.IntN(100))
		}
		what = append(what, fmt.Sprintf("%d other annotations", n))
	}
	if r.IntN(10) == 0 {
		p.Annotations["mesh.weft.dev/"+[]string{"unknown", "proxy-imag", "Proxy", "exclude-inbound-ports.v2"}[r.IntN(4)]] = "x"
		what = append(what, "an unknown weft annotation")
	}
	if r.IntN(5) == 0 {
		// Up to about 1 MiB of spec: the API server takes 3 MiB a request.
		n := 2 + r.IntN(40)
		port := int32(1024) // ports unique in the pod (the host's network needs it), at most 1024+40*60*20
		for j := 1; j < n; j++ {
			c := p.Spec.Containers[0]
			c.Name = fmt.Sprintf("c%d", j)
			c.Ports = nil
			for k := range r.IntN(60) {
				port += int32(1 + r.IntN(20))
				c.Ports = append(c.Ports, corev1.ContainerPort{Name: fmt.Sprintf("p%d-%d", j, k), ContainerPort: port})
			}
			for k := range r.IntN(50) {
				c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("V%d", k), Value: strings.Repeat("e", r.IntN(200))})
			}
			c.Command = []string{"/bin/app", strings.Repeat("x", r.IntN(20000))}
			p.Spec.Containers = append(p.Spec.Containers, c)
		}
		what = append(what, fmt.Sprintf("%d containers", n))
	}
	if r.IntN(8) == 0 {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "setup", Image: "busybox"})
		what = append(what, "an init container")
	}
	if r.IntN(10) == 0 {
		// What weft adds, already there under weft's names.
		switch r.IntN(4) {
		case 0:
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: inject.InitContainer, Image: "busybox"})
			what = append(what, "an init container named "+inject.InitContainer)
		case 1:
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: inject.VolumeToken, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
			what = append(what, "a volume named "+inject.VolumeToken)
		case 2:
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: inject.ProxyContainer, Image: "evil/proxy"})
			what = append(what, "a container named "+inject.ProxyContainer)
		case 3:
			p.Annotations[inject.AnnotationInjected] = hostileValue(r) + "x"
			what = append(what, "the injected annotation set")
		}
	}
	if r.IntN(20) == 0 {
		p.Spec.HostNetwork = true
		what = append(what, "the host's network")
	}
	if r.IntN(6) == 0 {
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/" + strings.Repeat("r", r.IntN(3000)), Port: intstr.FromString("http")}}}
		p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{
			Port: intstr.FromInt32(int32(1 + r.IntN(65535)))}}}
		what = append(what, "probes")
	}
	if r.IntN(6) == 0 {
		p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(strconv.Itoa(1+r.IntN(1000)) + "m")}}
		what = append(what, "resources")
	}
	if len(what) == 0 {
		what = append(what, "nothing odd")
	}
	return p, strings.Join(what, ", ")
}

// TestHostilePods: pods with odd annotations, huge specs and weft's own
// names, from a seeded random source (WEFT_SEED replays a run), through
// the real API server and its call to the webhook: each is injected,
// left alone with the reason as a warning, or refused with a reason that
// names what to change (the webhook's, naming the annotation, or the API
// server's own validation of the injected pod, naming the field), never
// with a failed webhook call; the webhook answers well within its 5 s
// timeout.
func TestHostilePods(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("WEFT_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("WEFT_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (WEFT_SEED=%d replays this run)", seed, seed)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	w := &warnings{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 400
	var lat []time.Duration
	outcome := map[string]int{}
	for i := range n {
		p, what := hostilePod(r, i)
		start := time.Now()
		err := c.Create(ctx, p, client.DryRunAll)
		d := time.Since(start)
		lat = append(lat, d)
		warned := w.take()
		if d > 5*time.Second {
			t.Errorf("pod %d (%s): answered in %v, past the webhook's timeout", i, what, d)
		}
		switch {
		case err == nil && p.Annotations[inject.AnnotationInjected] != "" && slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool {
			return c.Name == inject.ProxyContainer
		}) || err == nil && p.Annotations[inject.AnnotationInjected] == "grpc":
			outcome["injected"]++
		case err == nil:
			if !slices.ContainsFunc(warned, func(s string) bool { return strings.HasPrefix(s, "weft: not injected: ") }) {
				t.Errorf("pod %d (%s): neither injected nor told why (warnings %q)", i, what, warned)
			}
			outcome["not injected, with the reason"]++
		case strings.Contains(err.Error(), `admission webhook "inject.mesh.weft.dev" denied the request: `):
			msg := err.Error()
			if !strings.Contains(msg, "mesh.weft.dev/") && !strings.Contains(msg, "spec.") {
				t.Errorf("pod %d (%s): the injector's refusal names no annotation or field: %.600s", i, what, msg)
			}
			if len(msg) > 2048 {
				t.Errorf("pod %d (%s): the injector's refusal is %d bytes long: %.600s…", i, what, len(msg), msg)
			}
			outcome["refused by the injector, naming the annotation or field"]++
		case apierrors.IsInvalid(err) && !strings.Contains(err.Error(), "webhook"):
			// The API server's own validation. Of a pod that is valid
			// without injection (the same pod where no webhook is called),
			// only annotations made too long by weft's few are the
			// injection's to answer for, and the API server names them.
			alone := p.DeepCopy()
			alone.Namespace = unmeshed
			if c.Create(ctx, alone, client.DryRunAll) == nil && !strings.Contains(err.Error(), "metadata.annotations: Too long") {
				t.Errorf("pod %d (%s): valid on its own, invalid once injected: %.600s", i, what, err)
			}
			if outcome["refused by the API server, naming the field"] < 3 {
				t.Logf("pod %d (%s): %.300s", i, what, err)
			}
			outcome["refused by the API server, naming the field"]++
		default:
			t.Errorf("pod %d (%s): %.600s", i, what, err)
		}
	}
	for o, k := range outcome {
		t.Logf("%s: %d", o, k)
	}
	t.Logf("%d pods through the API server and the webhook: p50 %v, p99 %v, max %v", n, pct(lat, 50), pct(lat, 99), pct(lat, 100))
	if outcome["injected"] == 0 || outcome["refused by the injector, naming the annotation or field"] == 0 {
		t.Errorf("the pods did not exercise both injection and refusal: %v", outcome)
	}
}

// pct is the p-th percentile (0-100) of ds, nearest rank.
func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
