package reliability

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testenv/hostile"
)

// Per kind: perKind hostile objects, judgedPerKind of them of the kinds
// only the controller can judge (when the kind has any).
const (
	perKind       = 1000
	judgedPerKind = 50
	// judgedPorts are the ports of reviews that judged TrafficPolicies
	// target, one each, so that no two conflict.
	firstJudgedPort = 9001
	judgedPorts     = 63
)

// TestHostileObjects: 1,000 malformed or fuzzed objects of each kind
// (seeded; WEFT_SEED replays a run) and every field of each kind at
// 1 MiB, 10,000 items or 10,000 entries go to a real API server while the
// controller binary watches: each is refused naming its field, or, where
// the schema cannot judge (regular expressions, a selector key's form),
// stored and refused by the controller's verdict naming the field, then
// deleted. The stored objects are the same before and after, the
// controller does not panic, still judges a change, and its resident
// memory grows by less than 10%; admission answers within a second at
// the 99th percentile.
func TestHostileObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	t.Cleanup(cancel)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("WEFT_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("WEFT_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (WEFT_SEED=%d replays this run)", seed, seed)

	env := testenv.ForTest(t)
	c := env.Client
	baseline := hostileBaseline(ctx, t, c)
	proc := startWatchingController(ctx, t, env)
	for _, o := range baseline {
		if err := judged(ctx, c, o, metav1.ConditionTrue, "", "", 2*time.Minute); err != nil {
			t.Fatalf("the controller never accepted the baseline: %v", err)
		}
	}
	g, err := hostile.New(filepath.Join(env.Root, "config", "crd", "bases"), seed)
	if err != nil {
		t.Fatal(err)
	}
	// The first requests of a kind cost the API server more (its handler
	// and CEL programs warm up): a few valid dry runs first, unmeasured.
	for _, o := range baseline {
		for i := range 5 {
			w := o.DeepCopyObject().(client.Object)
			w.SetName(fmt.Sprintf("warm-%d", i))
			w.SetResourceVersion("")
			if err := c.Create(ctx, w, client.DryRunAll); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The controller's memory is measured once it has held and judged as
	// many objects as it will below: valid ones, made and deleted.
	churn(ctx, t, c)
	before := rss(t, proc.Pid())

	var refusedLat, oversizedLat, verdictLat []time.Duration
	report := map[string][3]int{}
	for _, kind := range g.Kinds() {
		judgedCases := g.Judged(kind, appNS, judgedPerKind)
		cases := append(g.Cases(kind, appNS, perKind-len(judgedCases)), g.Oversized(kind, appNS)...)
		failed, oversized := 0, 0
		for _, hc := range cases {
			start := time.Now()
			err := c.Create(ctx, &unstructured.Unstructured{Object: hc.Object}, client.FieldValidation("Strict"))
			d := time.Since(start)
			if hc.Oversized {
				oversizedLat = append(oversizedLat, d)
				oversized++
				if d > 500*time.Millisecond {
					t.Logf("%s %s: answered in %v", kind, hc.What, d)
				}
			} else {
				refusedLat = append(refusedLat, d)
			}
			if why := refusal(err, hc.Field); why != "" {
				failed++
				if failed <= 20 {
					t.Errorf("%s %s: %s", kind, hc.What, why)
				}
			}
		}
		if failed > 0 {
			t.Errorf("%s: %d of %d hostile objects were not refused as they should be", kind, failed, len(cases))
		}
		if n := stored(ctx, t, c, kind); n != 1 {
			t.Errorf("%s: %d stored after the hostile ones, want the baseline's 1", kind, n)
		}
		verdictLat = append(verdictLat, judgeAll(ctx, t, c, kind, judgedCases)...)
		report[kind] = [3]int{len(cases) - oversized, oversized, len(judgedCases)}
	}

	// The controller lives, has not panicked, and still judges a change.
	if ended, err := proc.Exited(); ended {
		t.Fatalf("the controller exited (%v)", err)
	}
	if panics := panicLines(proc.Log()); len(panics) > 0 {
		t.Errorf("the controller's log shows %d panics; the first: %s", len(panics), panics[0])
	}
	tp := baseline[1].(*meshv1.TrafficPolicy)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
			return err
		}
		tp.Spec.Timeouts = &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("7s")}
		return c.Update(ctx, tp)
	}); err != nil {
		t.Fatal(err)
	}
	if err := judged(ctx, c, tp, metav1.ConditionTrue, "", "", time.Minute); err != nil {
		t.Errorf("after the hostile objects, a change is not judged: %v", err)
	}
	for _, kind := range g.Kinds() {
		if n := stored(ctx, t, c, kind); n != 1 {
			t.Errorf("%s: %d stored at the end, want the baseline's 1", kind, n)
		}
	}
	after := rss(t, proc.Pid())

	for _, kind := range g.Kinds() {
		r := report[kind]
		t.Logf("%s: %d malformed refused at admission, %d oversized refused, %d judged by the controller", kind, r[0], r[1], r[2])
	}
	t.Logf("admission of the malformed objects: %d requests, p50 %v, p99 %v, max %v", len(refusedLat),
		percentile(refusedLat, 50), percentile(refusedLat, 99), percentile(refusedLat, 100))
	t.Logf("admission of the oversized objects: %d requests, p50 %v, p99 %v, max %v", len(oversizedLat),
		percentile(oversizedLat, 50), percentile(oversizedLat, 99), percentile(oversizedLat, 100))
	t.Logf("the controller's verdict on the objects only it judges: %d objects, p50 %v, p99 %v, max %v", len(verdictLat),
		percentile(verdictLat, 50), percentile(verdictLat, 99), percentile(verdictLat, 100))
	change := 100 * (float64(after) - float64(before)) / float64(before)
	t.Logf("the controller's resident memory: %d KiB before, %d KiB after (%+.1f%%)", before, after, change)
	if change >= 10 {
		t.Errorf("the controller's resident memory grew by %.1f%%, want less than 10%%", change)
	}
	all := append(slices.Clone(refusedLat), oversizedLat...)
	t.Logf("admission of all of them: %d requests, p99 %v", len(all), percentile(all, 99))
	if p := percentile(all, 99); p >= time.Second {
		t.Errorf("admission of the hostile objects: p99 %v, want under 1 s", p)
	}
	// A 10,000-item list costs the API server about a second on a busy
	// two-core machine (as a Service of 10,000 ports does): this bound
	// only catches what would hang.
	if m := percentile(oversizedLat, 100); m >= 5*time.Second {
		t.Errorf("admission of an oversized object took %v", m)
	}
}

// hostileBaseline creates shop's reviews (a Service, its MeshService
// with port 9080 and the ports judged policies target), a TrafficPolicy
// on 9080 and a namespace-wide PeerAuthentication: one object of each
// kind, which the hostile ones must leave alone.
func hostileBaseline(ctx context.Context, t *testing.T, c client.Client) []client.Object {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{meshNS, appNS} {
		must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"}}}
	ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{ServiceName: "reviews"}}
	for i := range judgedPorts + 1 {
		port := int32(9080)
		if i > 0 {
			port = int32(firstJudgedPort + i - 1)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "http-" + strconv.Itoa(int(port)), Port: port, TargetPort: intstr.FromInt32(port)})
		ms.Spec.Ports = append(ms.Spec.Ports, meshv1.MeshServicePort{Port: port, Protocol: meshv1.ProtocolHTTP})
	}
	must(c.Create(ctx, svc))
	must(c.Create(ctx, ms))
	tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Name: "reviews", Port: ptr.To[int32](9080)},
		Timeouts:  &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("5s")}}}
	must(c.Create(ctx, tp))
	pa := &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}
	must(c.Create(ctx, pa))
	return []client.Object{ms, tp, pa}
}

// churn stores as many valid objects of each kind as the hostile ones
// the controller judges, waits until each is accepted, and deletes them.
func churn(ctx context.Context, t *testing.T, c client.Client) {
	t.Helper()
	var objs []client.Object
	for i := range judgedPerKind {
		ms := hostile.ValidMeshService()
		ms.Spec.ServiceName = fmt.Sprintf("churn-%d", i)
		tp := hostile.ValidTrafficPolicy()
		tp.Spec.TargetRef.Port = ptr.To(int32(firstJudgedPort + i))
		pa := hostile.ValidPeerAuthentication()
		pa.Spec.Selector.MatchLabels = map[string]string{"churn": strconv.Itoa(i)}
		for _, o := range []client.Object{ms, tp, pa} {
			o.SetNamespace(appNS)
			o.SetName(fmt.Sprintf("churn-%d", i))
			if err := c.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
			objs = append(objs, o)
		}
	}
	for _, o := range objs {
		if err := judged(ctx, c, o, metav1.ConditionTrue, "", "", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range objs {
		if err := c.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

// startWatchingController runs the controller binary against env: its
// model, status writers and xDS server (on loopback, no proxy connects).
func startWatchingController(_ context.Context, t *testing.T, env *testenv.Env) *testenv.Process {
	t.Helper()
	kc, err := testenv.KubeconfigFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	p := testenv.StartProcess(t, filepath.Join(dir, "controller.log"), testenv.Binary(t, "weft"), "controller",
		"--kubeconfig="+kubeconfig, "--mesh-namespace="+meshNS, "--webhook-port=0", "--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(freePort(t)),
		"--xds-bind-address=127.0.0.1:"+strconv.Itoa(freePort(t)), "--xds-auth=none", "--log-format=json")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the controller's log (the end):\n%s", tail(p.Log(), 6000))
		}
	})
	return p
}

// refusal says what is wrong with the API server's answer to a hostile
// object, or "" when it refused it naming field.
func refusal(err error, field string) string {
	switch {
	case err == nil:
		return "the API server stored it"
	case !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err):
		return "refused, but not as invalid: " + err.Error()
	case !strings.Contains(err.Error(), field):
		msg := err.Error()
		if len(msg) > 2000 {
			msg = msg[:2000] + "…"
		}
		return "the refusal does not name " + field + ": " + msg
	}
	return ""
}

// judgeAll stores the objects only the controller can judge (judged
// TrafficPolicies each on a port of reviews of their own), in batches,
// waits for each verdict, Accepted=False Invalid naming the field, and
// deletes them. It returns how long each verdict took.
func judgeAll(ctx context.Context, t *testing.T, c client.Client, kind string, cases []hostile.Case) []time.Duration {
	t.Helper()
	var lat []time.Duration
	for len(cases) > 0 {
		batch := cases[:min(len(cases), judgedPorts)]
		cases = cases[len(batch):]
		var objs []*unstructured.Unstructured
		var created []time.Time
		for i, hc := range batch {
			u := &unstructured.Unstructured{Object: hc.Object}
			if kind == "TrafficPolicy" {
				if err := unstructured.SetNestedField(u.Object, int64(firstJudgedPort+i), "spec", "targetRef", "port"); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Create(ctx, u, client.FieldValidation("Strict")); err != nil {
				t.Errorf("%s %s: the API server refused what only the controller can judge: %v", kind, hc.What, err)
				continue
			}
			objs = append(objs, u)
			created = append(created, time.Now())
		}
		// Every verdict of the batch, as it comes: the time from each
		// object's creation to its verdict.
		left := map[string]int{}
		for i, u := range objs {
			left[u.GetName()] = i
		}
		var last string
		err := testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
			l := &unstructured.UnstructuredList{}
			l.SetAPIVersion("mesh.weft.dev/v1alpha1")
			l.SetKind(kind + "List")
			if err := c.List(ctx, l, client.InNamespace(appNS)); err != nil {
				return err
			}
			for _, u := range l.Items {
				i, ok := left[u.GetName()]
				if !ok {
					continue
				}
				if why := verdictIs(&u, metav1.ConditionFalse, meshv1.ReasonInvalid, batch[i].Field); why != "" {
					last = batch[i].What + ": " + why
					continue
				}
				lat = append(lat, time.Since(created[i]))
				delete(left, u.GetName())
			}
			if len(left) > 0 {
				return fmt.Errorf("%d of %d without their verdict; %s", len(left), len(objs), last)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", kind, err)
		}
		for _, u := range objs {
			if err := c.Delete(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if n := stored(ctx, t, c, kind); n != 1 {
			return fmt.Errorf("%d %s stored, want the baseline's 1", n, kind)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	return lat
}

// judged waits until o's current generation has Accepted with status,
// and, when given, reason and a message naming field.
func judged(ctx context.Context, c client.Client, o client.Object, status metav1.ConditionStatus, reason, field string, within time.Duration) error {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("mesh.weft.dev/v1alpha1")
	u.SetKind(kindName(o))
	return testenv.Eventually(ctx, within, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), u); err != nil {
			return err
		}
		if why := verdictIs(u, status, reason, field); why != "" {
			return fmt.Errorf("%s %s: %s", u.GetKind(), u.GetName(), why)
		}
		return nil
	})
}

// verdictIs says how u's Accepted condition differs from the verdict
// wanted on its current generation, or "" when it does not.
func verdictIs(u *unstructured.Unstructured, status metav1.ConditionStatus, reason, field string) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, x := range conds {
		m, _ := x.(map[string]any)
		if m["type"] != meshv1.ConditionAccepted {
			continue
		}
		gen, _ := m["observedGeneration"].(int64)
		msg, _ := m["message"].(string)
		if gen != u.GetGeneration() || m["status"] != string(status) || reason != "" && m["reason"] != reason || !strings.Contains(msg, field) {
			return fmt.Sprintf("Accepted %v at generation %d", m, u.GetGeneration())
		}
		return ""
	}
	return "no Accepted condition yet"
}

func kindName(o client.Object) string {
	if u, ok := o.(*unstructured.Unstructured); ok {
		return u.GetKind()
	}
	t := fmt.Sprintf("%T", o)
	return t[strings.LastIndex(t, ".")+1:]
}

// stored is the number of objects of kind stored in the app namespace.
func stored(ctx context.Context, t *testing.T, c client.Client, kind string) int {
	t.Helper()
	l := &unstructured.UnstructuredList{}
	l.SetAPIVersion("mesh.weft.dev/v1alpha1")
	l.SetKind(kind + "List")
	if err := c.List(ctx, l, client.InNamespace(appNS)); err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

// rss is a process's resident memory in KiB, from /proc.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// panicLines are the log's lines that tell of a panic, recovered or not.
func panicLines(log []byte) []string {
	var out []string
	for line := range strings.SplitSeq(string(log), "\n") {
		if strings.Contains(strings.ToLower(line), "panic") {
			out = append(out, line)
		}
	}
	return out
}
