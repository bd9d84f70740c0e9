package reliability

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
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

// TestRollingRestartDrainsAcrossReplicas: the rollout with two replicas
// of the controller (leader election, --drain-peers as the chart sets
// it), the clients spread over both through one forwarder, and every
// pre-stop reaching the first replica only. Its answers wait for the
// second replica's clients too: no call fails, and each answer names
// both replicas.
func TestRollingRestartDrainsAcrossReplicas(t *testing.T) {
	t.Parallel()
	if !testenv.InOwnNetworkNamespace(t, rolloutIPs()...) {
		return
	}
	ro := newRolloutWith(t, rolloutSetup{replicas: 2, peers: true})
	for i, d := range ro.restart(true) {
		if d.Outcome != "drained" || len(d.Replicas) != 2 || len(d.ReplicasReaching) != 0 || len(d.ReplicasGone) != 0 {
			t.Errorf("pod reviews-%d: the drain ended %s after %.3fs, replicas counted %v, still reaching %v, gone %v",
				i, d.Outcome, d.Seconds, d.Replicas, d.ReplicasReaching, d.ReplicasGone)
		}
	}
}

// TestRollingRestartWithAKilledReplica: the spread rollout, with the
// second replica killed (SIGKILL) before the fourth pod is replaced. Its
// clients reconnect to the first replica; its Lease stays, unrenewed, and
// the next drain waits for it until the Lease expires (10 s), not up to
// the pod's bound (22.5 s); the drains after it do not wait for it at
// all. No call fails.
func TestRollingRestartWithAKilledReplica(t *testing.T) {
	t.Parallel()
	if !testenv.InOwnNetworkNamespace(t, rolloutIPs()...) {
		return
	}
	ro := newRolloutWith(t, rolloutSetup{replicas: 2, peers: true})
	const killed = 3
	ro.beforeRound = func(round int) {
		if round == killed {
			ro.replicas[1].proc.Kill()
			t.Logf("%s killed", ro.replicas[1].name)
		}
	}
	for i, d := range ro.restart(true) {
		switch {
		case d.Outcome != "drained":
			t.Errorf("pod reviews-%d: the drain ended %s after %.3fs, replicas counted %v, still reaching %v", i, d.Outcome, d.Seconds, d.Replicas, d.ReplicasReaching)
		case i < killed && (len(d.Replicas) != 2 || len(d.ReplicasGone) != 0):
			t.Errorf("pod reviews-%d, before the kill: replicas counted %v, gone %v", i, d.Replicas, d.ReplicasGone)
		case i >= killed && (len(d.Replicas) != 1 || len(d.ReplicasGone) != 1):
			t.Errorf("pod reviews-%d, after the kill: replicas counted %v, gone %v", i, d.Replicas, d.ReplicasGone)
		case i == killed:
			// The Lease's 10 s, the answering replica's next renewal
			// (2 s), and room for a loaded machine; well short of the
			// pod's bound.
			if d.Seconds > 16 {
				t.Errorf("pod reviews-%d: the killed replica held its drain up for %.3fs", i, d.Seconds)
			}
			t.Logf("the first drain after the kill waited %.3fs for the killed replica's Lease to expire", d.Seconds)
		case d.Seconds > 2:
			t.Errorf("pod reviews-%d: a drain long after the kill took %.3fs", i, d.Seconds)
		}
	}
}

// TestRollingRestartDrainsForTheOtherReplica: every client on the second
// replica, every pre-stop reaching the first, which has no proxy of its
// own: its answers still wait for the second replica's clients, and no
// call fails.
func TestRollingRestartDrainsForTheOtherReplica(t *testing.T) {
	t.Parallel()
	if !testenv.InOwnNetworkNamespace(t, rolloutIPs()...) {
		return
	}
	ro := newRolloutWith(t, rolloutSetup{replicas: 2, peers: true, clientsOn: []int{1}})
	for i, d := range ro.restart(true) {
		if d.Outcome != "drained" || d.Proxies != 0 || len(d.Replicas) != 2 {
			t.Errorf("pod reviews-%d: the drain ended %s after %.3fs, %d proxies, replicas counted %v", i, d.Outcome, d.Seconds, d.Proxies, d.Replicas)
		}
	}
}

// TestRollingRestartWithoutPeersFailsCalls is the rollout above with the
// replicas not telling each other (--drain-peers=false): the first
// replica answers for its own proxies only, of which it has none, so
// each pod stops while the second replica's clients still send it calls.
// Calls fail: what the replicas' word prevents, and the proof that the
// test above can fail.
func TestRollingRestartWithoutPeersFailsCalls(t *testing.T) {
	t.Parallel()
	if !testenv.InOwnNetworkNamespace(t, rolloutIPs()...) {
		return
	}
	ro := newRolloutWith(t, rolloutSetup{replicas: 2, peers: false, clientsOn: []int{1}})
	ro.expectFailures = true
	for i, d := range ro.restart(true) {
		if d.Proxies != 0 || len(d.Replicas) != 0 {
			t.Errorf("pod reviews-%d: the first replica checked %d proxies and counted replicas %v", i, d.Proxies, d.Replicas)
		}
	}
}

// rollout is a real API server with kube-controller-manager's EndpointSlice
// controller, the controller binary (one replica or more), the pods of
// shop/reviews and their servers, and grpc-go clients.
type rollout struct {
	t   *testing.T
	ctx context.Context
	c   client.Client
	// replicas are the controller's; the pods' pre-stops reach the first.
	replicas []*rolloutReplica
	clients  []*xdstest.Client
	ips      []string
	// next is the index of the next pod's name and address.
	next int
	// live are the pods serving, oldest first.
	live []*rolloutPod
	// expectFailures says the rollout is one that must lose calls.
	expectFailures bool
	// beforeRound, when set, runs before each pod is replaced.
	beforeRound func(round int)
}

// rolloutReplica is one controller process.
type rolloutReplica struct {
	name               string
	proc               *testenv.Process
	xdsAddr, drainAddr string
}

// rolloutSetup lays the control plane and the clients out.
type rolloutSetup struct {
	// replicas of the controller: with more than one, they elect a leader
	// and run with --drain-peers=peers, as the chart has them.
	replicas int
	peers    bool
	// clientsOn are the replicas the clients' xDS connections reach,
	// through one forwarder (a Service in front of them), one after the
	// other: nil, every replica.
	clientsOn []int
}

// rolloutPod is a pod and the gRPC server its container runs.
type rolloutPod struct {
	name, ip string
	srv      *grpc.Server
	port     int32
}

func newRollout(t *testing.T) *rollout {
	t.Helper()
	return newRolloutWith(t, rolloutSetup{replicas: 1})
}

func newRolloutWith(t *testing.T, setup rolloutSetup) *rollout {
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
	for i := range setup.replicas {
		rp := &rolloutReplica{name: fmt.Sprintf("replica-%d", i),
			xdsAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), drainAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
		args := []string{"controller", "--kubeconfig=" + kubeconfig, "--mesh-namespace=" + meshNS,
			"--xds-bind-address=" + rp.xdsAddr, "--xds-auth=none", "--drain-bind-address=" + rp.drainAddr,
			"--webhook-port=0", "--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=json"}
		if setup.replicas > 1 {
			args = append(args, "--leader-elect", "--leader-election-namespace="+meshNS, "--drain-peers="+strconv.FormatBool(setup.peers))
		}
		rp.proc = testenv.StartProcess(t, filepath.Join(dir, rp.name+".log"), testenv.Binary(t, "weft"), args...)
		ro.replicas = append(ro.replicas, rp)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, rp := range ro.replicas {
				t.Logf("%s's log (the end):\n%s", rp.name, tail(rp.proc.Log(), 6000))
			}
			t.Logf("kube-controller-manager's log (the end):\n%s", tail(kcm.Log(), 3000))
		}
	})
	ro.objects()
	for range rolloutPods {
		ro.live = append(ro.live, ro.startPod())
	}
	for _, rp := range ro.replicas {
		if err := testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error { return synced(ctx, rp.xdsAddr, nil) }); err != nil {
			t.Fatalf("%s does not serve: %v", rp.name, err)
		}
	}
	on := setup.clientsOn
	if on == nil {
		on = []int{}
		for i := range ro.replicas {
			on = append(on, i)
		}
	}
	var upstreams []string
	for _, i := range on {
		upstreams = append(upstreams, ro.replicas[i].xdsAddr)
	}
	svc := testenv.Forward(t, upstreams...)
	var nodes []string
	for i := range 4 {
		node := fmt.Sprintf("client-%d.%s", i, appNS)
		cl := xdstest.NewClient(t, svc.Addr, node, target)
		// Each client connects before the next, so that the forwarder
		// hands the replicas one client each in turn.
		callCtx, cancelCall := context.WithTimeout(ctx, 2*time.Minute)
		_, err := cl.Call(callCtx, grpc.WaitForReady(true))
		cancelCall()
		if err != nil {
			t.Fatalf("client %d never reached reviews: %v", i, err)
		}
		ro.clients = append(ro.clients, cl)
		nodes = append(nodes, node)
	}
	ro.placed(nodes, on)
	for _, p := range ro.live {
		ro.reached(p)
	}
	return ro
}

// proxiesAt lists the proxies connected to a replica, from its proxy
// status (CSDS).
func proxiesAt(ctx context.Context, addr string) ([]string, error) {
	resp, err := fetchStatus(ctx, addr)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range resp.GetConfig() {
		out = append(out, c.GetNode().GetId())
	}
	slices.Sort(out)
	return out, nil
}

// placed checks that the clients are connected to the replicas on, and
// to those only, as each replica's proxy status (CSDS) says.
func (ro *rollout) placed(nodes []string, on []int) {
	ro.t.Helper()
	err := testenv.Eventually(ro.ctx, time.Minute, func(ctx context.Context) error {
		where := map[string][]string{}
		for i, rp := range ro.replicas {
			connected, err := proxiesAt(ctx, rp.xdsAddr)
			if err != nil {
				return err
			}
			if len(connected) > 0 != slices.Contains(on, i) {
				return fmt.Errorf("%s has the clients %v; the clients should reach replicas %v", rp.name, connected, on)
			}
			for _, n := range connected {
				where[n] = append(where[n], rp.name)
			}
		}
		for _, n := range nodes {
			if len(where[n]) != 1 {
				return fmt.Errorf("%s is connected to %v", n, where[n])
			}
		}
		ro.t.Logf("clients by replica: %v", where)
		return nil
	})
	if err != nil {
		ro.t.Fatal(err)
	}
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
	for round := range rolloutPods * rolloutRounds {
		if ro.beforeRound != nil {
			ro.beforeRound(round)
		}
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
			t.Logf("pod %s: drain %s in %.3fs (%d proxies checked; replicas counted %v, gone %v)", old.name, d.Outcome, d.Seconds, d.Proxies, d.Replicas, d.ReplicasGone)
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
		t.Logf("rolling restart of %d pods (drain asked: %v) in %v: %d calls, %d failed (first: %v)", rolloutPods*rolloutRounds, wait, took.Round(time.Millisecond), sent, failed, l.firstErr)
		if failed == 0 {
			t.Errorf("no call failed: this rollout cannot show what the drain prevents")
		}
		return drains
	}
	l.check(t, fmt.Sprintf("rolling restart of %d pods with drains in %v", rolloutPods*rolloutRounds, took.Round(time.Millisecond)))
	var secs []time.Duration
	for _, d := range drains {
		secs = append(secs, time.Duration(d.Seconds*float64(time.Second)))
	}
	t.Logf("drain time per pod: median %v, max %v", percentile(secs, 50).Round(time.Millisecond), percentile(secs, 100).Round(time.Millisecond))
	return drains
}

// preStop is the pod's pre-stop: it waits on the drain endpoint of the
// first replica, as the application's own shutdown or the sidecar's hook
// does through the Service.
func (ro *rollout) preStop(p *rolloutPod) drain.Answer {
	ro.t.Helper()
	d, err := drain.Wait(ro.ctx, drain.Request{URL: "http://" + ro.replicas[0].drainAddr + wire.DrainPath, Node: wire.NodeID(p.name, appNS)})
	if err != nil {
		ro.t.Fatalf("the pre-stop of %s: %v", p.name, err)
	}
	return d
}
