// Package reliability holds the tests of what happens to traffic when the
// control plane, the API server or a leader is lost: the controller binary
// as replicas behind a forwarder (a Service), a real API server behind
// another (the network to it), grpc-go xDS clients calling backends
// without pause. Each figure a test measures it logs, and
// docs/reliability.md holds them with the command that reproduces them.
// The tests run side by side, each in a network namespace of its own with
// an API server of its own: most of their time is an outage waited out.
package reliability

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

const (
	meshNS = "weft-system"
	appNS  = "shop"
	// target is what the clients call.
	target = "reviews.shop.svc.cluster.local:9080"
	// leaseName is the controller's Lease.
	leaseName = "weft-controller.mesh.weft.dev"
)

// outage is how long a test keeps a part down: WEFT_OUTAGE (a Go
// duration) for a longer run, two minutes by default.
func outage(t *testing.T) time.Duration {
	if v := os.Getenv("WEFT_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("WEFT_OUTAGE=%q: want a positive Go duration", v)
		}
		return d
	}
	return 2 * time.Minute
}

// rig is a real API server with shop/reviews (subsets v1 and v2, a pod of
// each serving gRPC), the controller binary as replicas, and the paths
// between them that a test can cut.
type rig struct {
	t   *testing.T
	ctx context.Context
	env *testenv.Env
	c   client.Client
	// api is the replicas' path to the API server; xds the proxies' path
	// to the replicas (each connection to the first replica that takes it).
	api, xds *testenv.Forwarder
	replicas []*replica
	backends map[string]*xdstest.FaultyBackend
}

// replica is one controller process.
type replica struct {
	name       string
	proc       *testenv.Process
	xdsAddr    string
	healthAddr string
}

// backendIPs are the pods' addresses, in the test's network namespace.
var backendIPs = map[string]string{"v1": "192.0.2.61", "v2": "192.0.2.62"}

// newRig starts the API server, the mesh's objects and backends, and n
// replicas of the controller with leader election.
func newRig(ctx context.Context, t *testing.T, n int) *rig {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	r := &rig{t: t, ctx: ctx, env: env, c: env.Client, backends: map[string]*xdstest.FaultyBackend{}}
	r.objects()

	u, err := url(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	r.api = testenv.Forward(t, u)
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + r.api.Addr
	kc, err := testenv.KubeconfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	weft := testenv.Binary(t, "weft")
	var xdsAddrs []string
	for i := range n {
		rp := &replica{name: fmt.Sprintf("replica-%d", i),
			xdsAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), healthAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
		rp.proc = testenv.StartProcess(t, filepath.Join(dir, rp.name+".log"), weft, "controller",
			"--kubeconfig="+kubeconfig, "--mesh-namespace="+meshNS, "--leader-elect", "--leader-election-namespace="+meshNS,
			"--xds-bind-address="+rp.xdsAddr, "--xds-auth=none", "--webhook-port=0", "--metrics-bind-address=0",
			"--health-probe-bind-address="+rp.healthAddr, "--log-format=json")
		r.replicas = append(r.replicas, rp)
		xdsAddrs = append(xdsAddrs, rp.xdsAddr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, rp := range r.replicas {
				t.Logf("%s's log (the end):\n%s", rp.name, tail(rp.proc.Log(), 6000))
			}
		}
	})
	r.xds = testenv.Forward(t, xdsAddrs...)
	// Proxies start once the control plane serves: a grpc-go client
	// whose first stream fails makes its first calls with no route at all.
	for _, rp := range r.replicas {
		if err := testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error { return synced(ctx, rp.xdsAddr, nil) }); err != nil {
			t.Fatalf("%s does not serve: %v", rp.name, err)
		}
	}
	return r
}

// url is the API server's host:port.
func url(cfg *rest.Config) (string, error) {
	u, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// objects creates the namespaces, reviews and its two pods with their
// backends and EndpointSlices.
func (r *rig) objects() {
	t, ctx := r.t, r.ctx
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{meshNS, appNS} {
		must(r.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	must(r.c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	must(r.c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews",
		Ports:       []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}},
		Subsets: []meshv1.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		},
	}}))
	for _, version := range []string{"v1", "v2"} {
		ip, name := backendIPs[version], "reviews-"+version
		b := xdstest.StartFaultyBackend(t, ip+":0", version, 0, 0)
		r.backends[version] = b
		must(r.c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: name,
			Labels: map[string]string{"app": "reviews", "version": version}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
		must(r.c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: appNS, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(b.Port)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: appNS, Name: name}}},
		}))
	}
}

// scenario opens a test of this package: in a network namespace of its
// own, within budget, replicas of the controller, every call of four
// clients routed to v1 and in force (Ready), and those calls going on
// without pause for the budget. It returns nothing in the test's first
// process, which only runs the namespace's.
func scenario(t *testing.T, replicas int, budget time.Duration) (context.Context, *rig, []*xdstest.Client, *load) {
	t.Helper()
	if !testenv.InOwnNetworkNamespace(t, backendIPs["v1"], backendIPs["v2"]) {
		return nil, nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	t.Cleanup(cancel)
	r := newRig(ctx, t, replicas)
	r.route("v1")
	clients := r.clients("client", 4)
	if _, err := r.reach(clients, "v1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.ready(time.Minute); err != nil {
		t.Fatal(err)
	}
	return ctx, r, clients, startLoad(ctx, clients, 20*time.Millisecond, budget-time.Minute)
}

// clients connects n grpc-go xDS clients through the replicas' Service and
// waits until each has reached reviews.
func (r *rig) clients(prefix string, n int) []*xdstest.Client {
	r.t.Helper()
	var out []*xdstest.Client
	for i := range n {
		cl := xdstest.NewClient(r.t, r.xds.Addr, fmt.Sprintf("%s-%d.%s", prefix, i, appNS), target)
		callCtx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
		_, err := cl.Call(callCtx, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			r.t.Fatalf("client %d never reached reviews: %v", i, err)
		}
		out = append(out, cl)
	}
	return out
}

// route sends the clients' calls to one subset, and calls marked
// x-lane: other to the other one. Both subsets stay referenced whichever
// way round: a grpc-go client whose routes begin to reference a cluster
// they did not fails a call now and then at that instant (it switches to
// the new routes before its balancer has the new cluster; see
// docs/reliability.md), and these tests measure the control plane, not
// that.
func (r *rig) route(subset string) {
	r.t.Helper()
	other := map[string]string{"v1": "v2", "v2": "v1"}[subset]
	spec := meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "reviews"},
		HTTP: []meshv1.HTTPRoute{
			{Matches: []meshv1.HTTPMatch{{Headers: []meshv1.HeaderMatch{{Name: "x-lane", Value: ptr.To("other")}}}},
				Backends: []meshv1.WeightedBackend{{Subset: other, Weight: 100}}},
			{Backends: []meshv1.WeightedBackend{{Subset: subset, Weight: 100}}},
		}}
	tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		err := r.c.Get(r.ctx, client.ObjectKeyFromObject(tp), tp)
		switch {
		case err == nil:
			tp.Spec = spec
			return r.c.Update(r.ctx, tp)
		case client.IgnoreNotFound(err) == nil:
			tp.Spec = spec
			return r.c.Create(r.ctx, tp)
		}
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// ready waits until the TrafficPolicy is Ready in its current generation.
func (r *rig) ready(within time.Duration) error {
	tp := &meshv1.TrafficPolicy{}
	return testenv.Eventually(r.ctx, within, func(ctx context.Context) error {
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: appNS, Name: "reviews"}, tp); err != nil {
			return err
		}
		c := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != tp.Generation {
			return fmt.Errorf("Ready is %+v at generation %d", c, tp.Generation)
		}
		return nil
	})
}

// reach waits until every client's calls go to subset, and returns how
// long that took.
func (r *rig) reach(clients []*xdstest.Client, subset string, within time.Duration) (time.Duration, error) {
	start := time.Now()
	err := testenv.Eventually(r.ctx, within, func(ctx context.Context) error {
		for i, cl := range clients {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := cl.Call(callCtx)
			cancel()
			if err != nil || got != subset {
				return fmt.Errorf("client %d called %q (%v), want %s", i, got, err, subset)
			}
		}
		return nil
	})
	return time.Since(start), err
}

// synced asks a replica's proxy status (CSDS) whether every client it
// names has acknowledged every type it was sent.
func synced(ctx context.Context, addr string, nodes []string) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(callCtx, &statusv3.ClientStatusRequest{})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, c := range resp.GetConfig() {
		types := 0
		for _, x := range c.GetGenericXdsConfigs() {
			if x.GetConfigStatus() != statusv3.ConfigStatus_SYNCED {
				return fmt.Errorf("%s: %s is %s", c.GetNode().GetId(), x.GetTypeUrl(), x.GetConfigStatus())
			}
			types++
		}
		seen[c.GetNode().GetId()] = types == 4
	}
	for _, n := range nodes {
		if !seen[n] {
			return fmt.Errorf("%s has not acknowledged all four types at %s", n, addr)
		}
	}
	return nil
}

// ackTimes polls a replica's proxy status until every node has
// acknowledged every type, and returns when each first had.
func ackTimes(ctx context.Context, rp *replica, nodes []string, within time.Duration) (map[string]time.Time, error) {
	at := map[string]time.Time{}
	err := testenv.Eventually(ctx, within, func(ctx context.Context) error {
		for _, n := range nodes {
			if _, ok := at[n]; !ok && synced(ctx, rp.xdsAddr, []string{n}) == nil {
				at[n] = time.Now()
			}
		}
		if len(at) < len(nodes) {
			return fmt.Errorf("%d of %d proxies acknowledged", len(at), len(nodes))
		}
		return nil
	})
	return at, err
}

var connectedRE = regexp.MustCompile(`\{"level":"info","ts":([0-9.]+),"logger":"xds","msg":"A proxy connected","proxy":"([^"]+)"`)

// connectedAt is when a replica's log says node connected, the first time
// after since.
func connectedAt(rp *replica, node string, since time.Time) (time.Time, error) {
	for _, m := range connectedRE.FindAllSubmatch(rp.proc.Log(), -1) {
		if string(m[2]) != node {
			continue
		}
		ts, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			return time.Time{}, err
		}
		if at := time.Unix(0, int64(ts*1e9)); at.After(since) {
			return at, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s's log does not say %s connected after %v", rp.name, node, since.Format(time.RFC3339))
}

// healthy says whether a replica answers its liveness probe.
func (rp *replica) healthy(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rp.healthAddr+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: /healthz answered %s", rp.name, resp.Status)
	}
	return nil
}

// alive fails the test when a replica has ended on its own.
func (rp *replica) alive(t *testing.T) {
	t.Helper()
	if ended, err := rp.proc.Exited(); ended {
		t.Fatalf("%s exited (%v)", rp.name, err)
	}
}

var identityRE = regexp.MustCompile(`"msg":"Campaigning for the leader lease"[^\n]*"identity":"([^"]+)"`)

// identity is the replica's in the leader election, from its log.
func (rp *replica) identity(ctx context.Context) (string, error) {
	var id string
	err := testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		m := identityRE.FindSubmatch(rp.proc.Log())
		if m == nil {
			return fmt.Errorf("%s has not campaigned yet", rp.name)
		}
		id = string(m[1])
		return nil
	})
	return id, err
}

// load is grpc-go calls made by clients without pause, each at most every
// pace, until stopped or limit passes.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	firstErr     error
	stop         func()
}

func startLoad(ctx context.Context, clients []*xdstest.Client, pace, limit time.Duration) *load {
	l := &load{}
	ctx, cancel := context.WithTimeout(ctx, limit)
	var waits []func()
	for _, cl := range clients {
		call := func(ctx context.Context) (struct{}, error) {
			callCtx, cancelCall := context.WithTimeout(ctx, 10*time.Second)
			defer cancelCall()
			_, err := cl.Call(callCtx)
			return struct{}{}, err
		}
		waits = append(waits, repeat(ctx, pace, call, func(_ struct{}, err error) {
			l.sent.Add(1)
			if err != nil {
				l.failed.Add(1)
				l.mu.Lock()
				if l.firstErr == nil {
					l.firstErr = err
				}
				l.mu.Unlock()
			}
		}))
	}
	l.stop = func() {
		cancel()
		for _, wait := range waits {
			wait()
		}
	}
	return l
}

// repeat makes calls one after the other, each at most every pace, until
// ctx ends, and hands each call's outcome to count unless the end of ctx
// cut the call short (a stop, not the mesh's doing). The returned wait
// waits for the last call.
func repeat[T any](ctx context.Context, pace time.Duration, call func(context.Context) (T, error), count func(T, error)) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(pace)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			v, err := call(ctx)
			if ctx.Err() != nil {
				return
			}
			count(v, err)
		}
	}()
	return func() { <-done }
}

// check stops the load and fails the test on any failed call.
func (l *load) check(t *testing.T, what string) {
	t.Helper()
	l.stop()
	sent, failed := l.sent.Load(), l.failed.Load()
	t.Logf("%s: %d calls, %d failed", what, sent, failed)
	if sent == 0 {
		t.Errorf("%s: no call was made", what)
	}
	if failed > 0 {
		t.Errorf("%s: %d of %d calls failed; the first: %v", what, failed, sent, l.firstErr)
	}
}

// holder is the Lease's holder now.
func (r *rig) holder(ctx context.Context) (string, error) {
	var l coordinationv1.Lease
	if err := r.c.Get(ctx, client.ObjectKey{Namespace: meshNS, Name: leaseName}, &l); err != nil {
		return "", err
	}
	return ptr.Deref(l.Spec.HolderIdentity, ""), nil
}

// percentile is the p-th percentile (0-100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
