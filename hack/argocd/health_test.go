package argocd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/testenv"
)

// health runs script as Argo CD runs a custom health check: obj is the
// resource as a Lua table, only the base and table libraries are open
// (Argo CD's default for scripts from argocd-cm), and the script returns
// a table with status and message.
func health(t *testing.T, script string, obj map[string]any) (status, message string) {
	t.Helper()
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			t.Fatal(err)
		}
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		t.Fatalf("the health script fails: %v", err)
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("the health script returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message"))
}

// toLua turns a decoded JSON object into Lua values the way Argo CD hands
// a resource to a health script: objects and arrays become tables, numbers
// (int64 in an unstructured object) numbers.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	}
	return lua.LNil
}

// proxies plays the xDS server's part for the readiness writer: what the
// connected proxies acknowledged, per resource. The conditions are still
// computed and written by weft's controllers through the API server.
type proxies struct {
	mu      sync.Mutex
	answers map[string]proxyAnswer
	changes chan struct{}
}

type proxyAnswer struct {
	total, synced int
	rejected      string
}

func (p *proxies) ProxiesFor(kind, namespace, name string, _ int64) (int, int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.answers[kind+"/"+namespace+"/"+name]
	return a.total, a.synced, a.rejected
}

func (p *proxies) Changes() <-chan struct{} { return p.changes }

func (p *proxies) set(kind, namespace, name string, a proxyAnswer) {
	p.mu.Lock()
	p.answers[kind+"/"+namespace+"/"+name] = a
	p.mu.Unlock()
}

// TestHealthChecks runs health.lua against the statuses weft's controllers
// write into a real API server, for each kind and each outcome, and checks
// that kstatus (what Flux reads) agrees, where the two are meant to.
func TestHealthChecks(t *testing.T) {
	script, err := os.ReadFile("health.lua")
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.ForTest(t)
	// Room for the checks below, each bounded at 60 s against a hang (the
	// controllers settle them all at once, so after the first they are
	// short).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	px := &proxies{answers: map[string]proxyAnswer{}, changes: make(chan struct{})}
	if err := controllers.Setup(ctx, mgr, controllers.Options{MeshNamespace: "weft-system", Proxies: px}); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stopMgr := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopMgr()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		}
	}
	defer stop()

	ns := "t-" + strings.ToLower(rand.String(6))
	create := func(y string) *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
			t.Fatal(err)
		}
		u.SetNamespace(ns)
		if err := env.Client.Create(ctx, u); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		return u
	}
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// One Service per MeshService, one MeshService per TrafficPolicy: two
	// claims on the same Service or port would conflict.
	for _, svc := range []string{"reviews", "details", "stock", "orders"} {
		create(`{apiVersion: v1, kind: Service, metadata: {name: ` + svc + `}, spec: {ports: [{port: 9080}]}}`)
	}
	for _, ms := range []string{"stock", "orders"} {
		create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: ` + ms + `},
 spec: {serviceName: ` + ms + `, ports: [{port: 9080, protocol: http}], subsets: [{name: v1, labels: {version: v1}}]}}`)
	}
	px.set("MeshService", ns, "slow", proxyAnswer{total: 3, synced: 1})
	px.set("TrafficPolicy", ns, "nacked", proxyAnswer{total: 2, synced: 1,
		rejected: "proxy reviews-v1.shop rejected RouteConfiguration: route: invalid weight"})

	type outcome struct{ argo, kstatus string }
	cases := []struct {
		name string
		obj  *unstructured.Unstructured
		want outcome
	}{
		{"a MeshService whose Service exists", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: reviews},
 spec: {serviceName: reviews, ports: [{port: 9080, protocol: http}], subsets: [{name: v1, labels: {version: v1}}]}}`),
			outcome{"Healthy", "Current"}},
		{"a MeshService without its Service", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: ratings},
 spec: {serviceName: ratings, ports: [{port: 9080}]}}`),
			outcome{"Degraded", "Failed"}},
		{"a MeshService that proxies are still acknowledging", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: slow},
 spec: {serviceName: details, ports: [{port: 9080}]}}`),
			outcome{"Progressing", "InProgress"}},
		{"a TrafficPolicy in force", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficPolicy, metadata: {name: canary},
 spec: {targetRef: {name: reviews}, http: [{backends: [{subset: v1, weight: 100}]}]}}`),
			outcome{"Healthy", "Current"}},
		{"a TrafficPolicy naming an undefined subset", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficPolicy, metadata: {name: to-v4},
 spec: {targetRef: {name: stock}, http: [{backends: [{subset: v4, weight: 100}]}]}}`),
			outcome{"Degraded", "Failed"}},
		// A NACK: Ready=False, reason Rejected, and no Stalled (a proxy
		// may accept the next version without an edit). Argo CD shows it
		// Degraded; kstatus reads any Ready=False without Stalled as
		// InProgress.
		{"a TrafficPolicy a proxy rejected", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficPolicy, metadata: {name: nacked},
 spec: {targetRef: {name: orders}, timeouts: {request: 2s}}}`),
			outcome{"Degraded", "InProgress"}},
		{"a namespace-wide PeerAuthentication", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: PeerAuthentication, metadata: {name: default}, spec: {mode: STRICT}}`),
			outcome{"Healthy", "Current"}},
	}
	// Created after the first, the second namespace-wide policy conflicts.
	time.Sleep(1100 * time.Millisecond)
	cases = append(cases, struct {
		name string
		obj  *unstructured.Unstructured
		want outcome
	}{"a second namespace-wide PeerAuthentication", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: PeerAuthentication, metadata: {name: also-default}, spec: {mode: PERMISSIVE}}`),
		outcome{"Degraded", "Failed"}})

	check := func(name string, o *unstructured.Unstructured, want outcome) {
		t.Helper()
		var gotArgo, msg string
		var gotK kstatus.Status
		err := testenv.Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
			live := o.DeepCopy()
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
				return err
			}
			gotArgo, msg = health(t, string(script), live.Object)
			res, err := kstatus.Compute(live)
			if err != nil {
				return err
			}
			gotK = res.Status
			if gotArgo != want.argo || string(gotK) != want.kstatus {
				return fmt.Errorf("Argo CD %s (%s), kstatus %s", gotArgo, msg, gotK)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: want Argo CD %s and kstatus %s: %v", name, want.argo, want.kstatus, err)
			return
		}
		if msg == "" {
			t.Errorf("%s: %s without a message", name, gotArgo)
		}
		t.Logf("%s: %s (%s), kstatus %s", name, gotArgo, msg, gotK)
	}
	for _, c := range cases {
		check(c.name, c.obj, c.want)
	}

	// With the controller stopped, an edit is not looked at: the status
	// describes an older generation, which both read as in progress.
	stop()
	healthy := cases[0].obj
	live := healthy.DeepCopy()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(healthy), live); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(live.Object, []any{map[string]any{"name": "v1", "labels": map[string]any{"version": "v1"}},
		map[string]any{"name": "v2", "labels": map[string]any{"version": "v2"}}}, "spec", "subsets"); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Update(ctx, live); err != nil {
		t.Fatal(err)
	}
	check("a MeshService edited while weft is down", healthy, outcome{"Progressing", "InProgress"})
	// A resource weft never saw has no status. kstatus takes a resource
	// without conditions for Current; Argo CD waits.
	check("a MeshService weft has not seen", create(`
{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: unseen},
 spec: {serviceName: reviews, ports: [{port: 9080}]}}`), outcome{"Progressing", "Current"})
}

// TestArgoCDConfigMapCarriesTheScript: the argocd-cm snippet installs
// health.lua, unchanged, for each of the three kinds.
func TestArgoCDConfigMapCarriesTheScript(t *testing.T) {
	script, err := os.ReadFile("health.lua")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("argocd-cm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(b, &cm); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"MeshService", "TrafficPolicy", "PeerAuthentication"} {
		key := "resource.customizations.health.mesh.weft.dev_" + kind
		if cm.Data[key] != string(script) {
			t.Errorf("argocd-cm.yaml: %s is not health.lua", key)
		}
	}
	if len(cm.Data) != 3 {
		t.Errorf("argocd-cm.yaml has %d keys, want 3", len(cm.Data))
	}
}
