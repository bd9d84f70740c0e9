package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/replicas"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// replicaUnderTest is one replica: an xDS server with its drain endpoint
// and its board.
type replicaUnderTest struct {
	srv       *Server
	board     *replicas.Board
	stopBoard func()
	addr      string
	drainAddr string
}

// startReplica runs a server with a board named name; pods is the
// replicas' cache of pods.
func startReplica(ctx context.Context, t *testing.T, cs kubernetes.Interface, pods client.Reader, name string) *replicaUnderTest {
	t.Helper()
	b := &replicas.Board{Client: cs, Namespace: "weft-system", Name: name, Duration: 2 * time.Second, Renew: 300 * time.Millisecond,
		MinInterval: 50 * time.Millisecond, Log: logr.Discard()}
	bctx, stopB := context.WithCancel(context.Background())
	bdone := make(chan struct{})
	go func() { defer close(bdone); _ = b.Start(bctx) }()
	stopBoard := sync.OnceFunc(func() { stopB(); <-bdone })
	t.Cleanup(stopBoard)
	s, err := New(Options{Address: "127.0.0.1:0", DrainAddress: "127.0.0.1:0", Pods: pods, Peers: b, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Start(sctx) }()
	t.Cleanup(func() { stop(); <-done })
	r := &replicaUnderTest{srv: s, board: b, stopBoard: stopBoard}
	if r.addr, err = s.Addr(ctx); err != nil {
		t.Fatal(err)
	}
	if r.drainAddr, err = s.DrainAddr(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDrainWaitsForTheOtherReplicas: two replicas on a real API server,
// each with a grpc-go xDS client, the drain asked of the first. Its answer
// waits for the other replica's proxies too: while they hold the pod
// HEALTHY it does not come, though the first replica's own proxy is
// clear; it comes once the other replica's proxy acknowledged the pod
// DRAINING, and names both replicas. A replica that stops is not waited
// for, and one that died (its Lease unrenewed) only until its Lease
// expires.
func TestDrainWaitsForTheOtherReplicas(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"bookinfo", "weft-system"} {
		must(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	for _, name := range []string{"reviews-v1", "reviews-v2"} {
		must(env.Client.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: name},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
	}
	// The replicas' cache of pods, indexed as the controller's is.
	pods, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme})
	must(err)
	must(IndexTerminatingPods(ctx, pods))
	cctx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go func() { _ = pods.Start(cctx) }()
	if !pods.WaitForCacheSync(ctx) {
		t.Fatal("the pods' cache never synced")
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	must(err)

	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	model := func(b1, b2 xdstest.Backend) *mesh.Model { return mesh.Build(xdstest.ReviewsInput(b1, b2)) }
	a := startReplica(ctx, t, cs, pods, "a")
	b := startReplica(ctx, t, cs, pods, "b")
	for _, r := range []*replicaUnderTest{a, b} {
		r.srv.OnModel(ctx, model(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)))
	}
	for i, r := range []*replicaUnderTest{a, b} {
		cl := xdstest.NewClient(t, r.addr, fmt.Sprintf("client-%d", i), target)
		if _, err := cl.Call(ctx, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
	}
	drain := func(pod, timeout string) DrainResult {
		t.Helper()
		url := "http://" + a.drainAddr + wire.DrainPath + "?" + wire.DrainTimeoutParam + "=" + timeout
		res, _, err := askDrain(ctx, http.DefaultClient, url, map[string]string{wire.DrainNodeHeader: wire.NodeID(pod, "bookinfo")})
		if err != nil {
			t.Fatalf("drain %s: %v", pod, err)
		}
		return res
	}
	for _, name := range []string{"reviews-v1", "reviews-v2"} {
		must(env.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: name}},
			client.GracePeriodSeconds(120)))
	}

	// Both replicas' proxies hold reviews-v1 HEALTHY.
	if res := drain("reviews-v1", "1s"); res.Outcome != metrics.DrainTimedOut || res.Reaching != 1 ||
		!slices.Equal(res.Replicas, []string{"a", "b"}) || !slices.Equal(res.ReplicasReaching, []string{"b"}) {
		t.Errorf("while every proxy holds the pod HEALTHY: %+v", res)
	}
	// a's proxy acknowledges it DRAINING; b's still holds it HEALTHY.
	a.srv.OnModel(ctx, model(xdstest.Draining("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)))
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		if res := drain("reviews-v1", "500ms"); res.Outcome != metrics.DrainTimedOut || res.Reaching != 0 ||
			!slices.Equal(res.ReplicasReaching, []string{"b"}) {
			return fmt.Errorf("only a's proxy is clear: %+v", res)
		}
		return nil
	}))
	// A wait in progress ends once b's proxy acknowledged the pod DRAINING.
	var res DrainResult
	var wg sync.WaitGroup
	wg.Go(func() { res = drain("reviews-v1", "2m") })
	b.srv.OnModel(ctx, model(xdstest.Draining("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)))
	wg.Wait()
	if res.Outcome != metrics.DrainDrained || res.Seconds > 60 || !slices.Equal(res.Replicas, []string{"a", "b"}) || len(res.ReplicasReaching) != 0 {
		t.Errorf("once both replicas' proxies are clear: %+v", res)
	}
	t.Logf("reviews-v1 drained across two replicas in %.3fs", res.Seconds)
	var lease coordinationv1.Lease
	must(env.Client.Get(ctx, types.NamespacedName{Namespace: "weft-system", Name: wire.DrainLeasePrefix + "b"}, &lease))
	var v1pod corev1.Pod
	must(env.Client.Get(ctx, types.NamespacedName{Namespace: "bookinfo", Name: "reviews-v1"}, &v1pod))
	if got := lease.Annotations[wire.AnnotationDrainClear]; got != string(v1pod.UID) {
		t.Errorf("b's Lease lists %q as clear, want reviews-v1 (%s) alone", got, v1pod.UID)
	}

	// reviews-v2: a's proxy is clear of it, b's is not. b stops, and a
	// replica that died left its Lease behind.
	a.srv.OnModel(ctx, model(xdstest.Draining("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Draining("reviews-v2", "v2", "127.0.0.3", v2)))
	now := metav1.NewMicroTime(time.Now())
	must(env.Client.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: wire.DrainLeasePrefix + "dead",
		Labels: map[string]string{wire.LabelDrainReplica: "true"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("dead"), LeaseDurationSeconds: ptr.To[int32](2), RenewTime: &now}}))
	b.stopBoard()
	res = drain("reviews-v2", "1m")
	if res.Outcome != metrics.DrainDrained || !slices.Equal(res.Replicas, []string{"a"}) || !slices.Equal(res.ReplicasGone, []string{"b", "dead"}) {
		t.Errorf("with b stopped and a dead replica: %+v", res)
	}
	// The dead replica's Lease holds 2 s; then a's own renewal (0.3 s),
	// and room for a loaded machine.
	if res.Seconds > 6 {
		t.Errorf("a dead replica held the drain up for %.3fs", res.Seconds)
	}
	t.Logf("reviews-v2 drained in %.3fs, a dead replica waited for until its Lease expired", res.Seconds)
}
