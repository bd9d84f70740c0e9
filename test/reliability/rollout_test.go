package reliability

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/drain"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// The rolling restart: three pods of shop/reviews replaced one at a time,
// as a Deployment with maxSurge 1 and maxUnavailable 0 does, under calls
// from grpc-go xDS clients without pause. Pod addresses are published by
// kube-controller-manager's own EndpointSlice controller (terminating
// endpoints too); the test plays the kubelet: it starts a pod's server,
// marks it Running and Ready, and when the pod is deleted (with a grace
// period) runs its pre-stop, then stops its server and removes the pod.
const (
	rolloutPods  = 3
	rolloutGrace = 30 // seconds, the Kubernetes default
	// rolloutRounds is how many times the pods are replaced in turn.
	rolloutRounds = 3
	// rolloutCallTime is how long a pod's server takes to answer: calls
	// are in flight whenever clients send a pod calls.
	rolloutCallTime = 2 * time.Millisecond
)

// rolloutIPs are the addresses of the pods: the first rolloutPods the
// first generation's, and one more per pod replaced.
func rolloutIPs() []string {
	var out []string
	for i := range rolloutPods * (rolloutRounds + 1) {
		out = append(out, "192.0.2."+strconv.Itoa(101+i))
	}
	return out
}

// TestRollingRestartDrains: each pod's pre-stop waits on weft's drain
// endpoint until every client acknowledged endpoints in which the pod
// takes no new calls; then the pod's server stops (as a process that
// exits on SIGTERM does: its connections close, calls in flight fail).
// No call fails, and the drain time of each pod is logged.
func TestRollingRestartDrains(t *testing.T) {
	t.Parallel()
	if !testenv.InOwnNetworkNamespace(t, rolloutIPs()...) {
		return
	}
	ro := newRollout(t)
	drains := ro.restart(true)
	for i, d := range drains {
		if d.Outcome != "drained" {
			t.Errorf("pod reviews-%d: the drain ended %s after %.3fs, with %d of %d proxies still reaching it", i, d.Outcome, d.Seconds, d.Reaching, d.Proxies)
		}
	}
}

// TestRollingRestartWithoutDrainFailsCalls is the same rollout with no
// wait: each pod's server stops as soon as the pod is deleted. Calls fail
// (clients still send it new calls); this is what the drain prevents, and
// shows that the test above can fail.
func TestRollingRestartWithoutDrainFailsCalls(t *testing.T) {
	t.Parallel()
	if !testenv.InOwnNetworkNamespace(t, rolloutIPs()...) {
		return
	}
	ro := newRollout(t)
	ro.expectFailures = true
	ro.restart(false)
}

// rollout is a real API server with kube-controller-manager's EndpointSlice
// controller, the controller binary, the pods of shop/reviews and their
// servers, and grpc-go clients.
type rollout struct {
	t         *testing.T
	ctx       context.Context
	c         client.Client
	xdsAddr   string
	drainAddr string
	clients   []*xdstest.Client
	ips       []string
	// next is the index of the next pod's name and address.
	next int
	// live are the pods serving, oldest first.
	live []*rolloutPod
	// expectFailures says the rollout is the one without a wait.
	expectFailures bool
}

// rolloutPod is a pod and the gRPC server its container runs.
type rolloutPod struct {
	name, ip string
	srv      *grpc.Server
	port     int32
}

func newRollout(t *testing.T) *rollout {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	ro := &rollout{t: t, ctx: ctx, c: env.Client, ips: rolloutIPs()}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.Kubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	kcm := testenv.StartProcess(t, filepath.Join(dir, "kube-controller-manager.log"), filepath.Join(env.AssetsDir(), "kube-controller-manager"),
		"--kubeconfig="+kubeconfig, "--leader-elect=false", "--secure-port=0", "--controllers=endpointslice-controller")
	ro.xdsAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	ro.drainAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	weft := testenv.StartProcess(t, filepath.Join(dir, "weft.log"), testenv.Binary(t, "weft"), "controller",
		"--kubeconfig="+kubeconfig, "--mesh-namespace="+meshNS,
		"--xds-bind-address="+ro.xdsAddr, "--xds-auth=none", "--drain-bind-address="+ro.drainAddr,
		"--webhook-port=0", "--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=json")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("weft's log (the end):\n%s", tail(weft.Log(), 6000))
			t.Logf("kube-controller-manager's log (the end):\n%s", tail(kcm.Log(), 3000))
		}
	})
	ro.objects()
	for range rolloutPods {
		ro.live = append(ro.live, ro.startPod())
	}
	if err := testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error { return synced(ctx, ro.xdsAddr, nil) }); err != nil {
		t.Fatalf("weft does not serve: %v", err)
	}
	for i := range 4 {
		cl := xdstest.NewClient(t, ro.xdsAddr, fmt.Sprintf("client-%d.%s", i, appNS), target)
		ro.clients = append(ro.clients, cl)
	}
	for _, p := range ro.live {
		ro.reached(p)
	}
	return ro
}

// objects creates the namespaces, the node the pods run on, and
// shop/reviews with its MeshService.
func (ro *rollout) objects() {
	t, ctx, c := ro.t, ro.ctx, ro.c
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNS}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS}},
		// The EndpointSlice controller publishes only pods of nodes it
		// knows.
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "reviews"},
			Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
		}},
		&meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
			ServiceName: "reviews",
			Ports:       []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}},
		}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
}

// startPod starts the next pod's server, creates the pod bound to the node
// and marks it Running and Ready, as its kubelet would.
func (ro *rollout) startPod() *rolloutPod {
	t, ctx := ro.t, ro.ctx
	t.Helper()
	p := &rolloutPod{name: "reviews-" + strconv.Itoa(ro.next), ip: ro.ips[ro.next]}
	ro.next++
	lis, err := net.Listen("tcp", p.ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = int32(lis.Addr().(*net.TCPAddr).Port)
	p.srv = grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var in emptypb.Empty
		if err := stream.RecvMsg(&in); err != nil {
			return err
		}
		time.Sleep(rolloutCallTime)
		if err := stream.SetHeader(metadata.Pairs("backend", p.name)); err != nil {
			return err
		}
		return stream.SendMsg(&emptypb.Empty{})
	}))
	go func() { _ = p.srv.Serve(lis) }()
	t.Cleanup(p.srv.Stop)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: p.name, Labels: map[string]string{"app": "reviews"}},
		Spec: corev1.PodSpec{NodeName: "node-1", TerminationGracePeriodSeconds: ptr.To[int64](rolloutGrace),
			Containers: []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: p.port}}}}}}
	if err := ro.c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := ro.c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		now := metav1.Now()
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}, StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			}}
		return ro.c.Status().Update(ctx, pod)
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// reached waits until every client has been answered by the pod.
func (ro *rollout) reached(p *rolloutPod) {
	ro.t.Helper()
	for i, cl := range ro.clients {
		err := testenv.Eventually(ro.ctx, 2*time.Minute, func(ctx context.Context) error {
			for range 4 * rolloutPods {
				callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				got, err := cl.Call(callCtx, grpc.WaitForReady(true))
				cancel()
				if err == nil && got == p.name {
					return nil
				}
			}
			return fmt.Errorf("client %d is not answered by %s", i, p.name)
		})
		if err != nil {
			ro.t.Fatal(err)
		}
	}
}

// restart replaces every pod in turn, rolloutRounds times, under load: a
// new pod first, then the oldest deleted with a grace period; its pre-stop
// waits on the drain endpoint when wait is set. It returns the drains'
// answers.
func (ro *rollout) restart(wait bool) []drain.Answer {
	t := ro.t
	l := startLoad(ro.ctx, ro.clients, 2*time.Millisecond, 8*time.Minute)
	var drains []drain.Answer
	start := time.Now()
	for range rolloutPods * rolloutRounds {
		fresh := ro.startPod()
		ro.reached(fresh)
		old := ro.live[0]
		ro.live = append(ro.live[1:], fresh)
		if err := ro.c.Delete(ro.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: old.name}},
			client.GracePeriodSeconds(rolloutGrace)); err != nil {
			t.Fatal(err)
		}
		if wait {
			d := ro.preStop(old)
			t.Logf("pod %s: drain %s in %.3fs (%d proxies checked)", old.name, d.Outcome, d.Seconds, d.Proxies)
			drains = append(drains, d)
		}
		// The container ends: a server that exits on SIGTERM closes its
		// connections at once (WEFT_ROLLOUT_STOP=graceful: it stops taking
		// calls and finishes those in flight, grpc-go's GracefulStop).
		if os.Getenv("WEFT_ROLLOUT_STOP") == "graceful" {
			old.srv.GracefulStop()
		} else {
			old.srv.Stop()
		}
		if err := ro.c.Delete(ro.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: old.name}},
			client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	if ro.expectFailures {
		l.stop()
		sent, failed := l.sent.Load(), l.failed.Load()
		t.Logf("rolling restart of %d pods without a drain in %v: %d calls, %d failed (first: %v)", rolloutPods*rolloutRounds, took.Round(time.Millisecond), sent, failed, l.firstErr)
		if failed == 0 {
			t.Errorf("no call failed with pods stopped as soon as deleted: this rollout cannot show what the drain prevents")
		}
		return nil
	}
	l.check(t, fmt.Sprintf("rolling restart of %d pods with drains in %v", rolloutPods*rolloutRounds, took.Round(time.Millisecond)))
	var secs []time.Duration
	for _, d := range drains {
		secs = append(secs, time.Duration(d.Seconds*float64(time.Second)))
	}
	t.Logf("drain time per pod: median %v, max %v", percentile(secs, 50).Round(time.Millisecond), percentile(secs, 100).Round(time.Millisecond))
	return drains
}

// preStop is the pod's pre-stop: it waits on the drain endpoint, as the
// application's own shutdown or the sidecar's hook does.
func (ro *rollout) preStop(p *rolloutPod) drain.Answer {
	ro.t.Helper()
	d, err := drain.Wait(ro.ctx, drain.Request{URL: "http://" + ro.drainAddr + wire.DrainPath, Node: wire.NodeID(p.name, appNS)})
	if err != nil {
		ro.t.Fatalf("the pre-stop of %s: %v", p.name, err)
	}
	return d
}
