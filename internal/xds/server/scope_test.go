package server

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// scopedInput is reviews that only productpage may call, and three
// client pods: productpage, and details and ratings (which may not).
func scopedInput(v1 int32, allow ...meshv1.Source) mesh.Input {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1))
	in.TrafficPolicies = nil
	in.MeshServices[0].Spec.Allow = []meshv1.AllowRule{{From: allow}}
	for _, sa := range []string{"productpage", "details", "ratings"} {
		in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: sa}, Spec: corev1.PodSpec{ServiceAccountName: sa}})
	}
	return in
}

// A proxy receives only the services its identity may call: grpc-go's own
// client in a pod whose ServiceAccount the allow rules do not name is not
// told of reviews and cannot call it, while productpage can. A change of
// rules adds the service to the newly allowed caller and removes it from
// the one no longer allowed, with a push; callers of the same services
// share one set in the cache.
func TestProxiesReceiveOnlyWhatTheyMayCall(t *testing.T) {
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	productpage := meshv1.Source{Namespace: "bookinfo", ServiceAccount: "productpage"}
	details := meshv1.Source{Namespace: "bookinfo", ServiceAccount: "details"}
	s, _ := start(t, "127.0.0.1:0")
	s.OnModel(context.Background(), mesh.Build(scopedInput(v1, productpage)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr, err := s.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*xdstest.Client{}
	for _, sa := range []string{"productpage", "details", "ratings"} {
		clients[sa] = xdstest.NewClient(t, addr, wire.NodeID(sa, "bookinfo"), target)
	}
	calls := func(sa string, want bool) error {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := clients[sa].Call(callCtx, grpc.WaitForReady(want))
		switch {
		case want && err != nil:
			return fmt.Errorf("%s cannot call reviews: %v", sa, err)
		case !want && err == nil:
			return fmt.Errorf("%s calls reviews, which it may not", sa)
		}
		return nil
	}
	expect := func(want map[string]bool) {
		t.Helper()
		for sa, ok := range want {
			if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error { return calls(sa, ok) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	expect(map[string]bool{"productpage": true, "details": false, "ratings": false})
	if a, b := s.setsOf(wire.NodeID("details", "bookinfo")), s.setsOf(wire.NodeID("ratings", "bookinfo")); len(a) == 0 || !slices.Equal(a, b) {
		t.Errorf("details and ratings may call the same services and hold sets %v and %v, want one shared set", a, b)
	}
	if a, b := s.setsOf(wire.NodeID("details", "bookinfo")), s.setsOf(wire.NodeID("productpage", "bookinfo")); slices.Equal(a, b) {
		t.Errorf("details and productpage share the sets %v", a)
	}

	// details joins the rule, productpage leaves it.
	s.OnModel(context.Background(), mesh.Build(scopedInput(v1, details)))
	expect(map[string]bool{"details": true, "productpage": false, "ratings": false})
}

// setsOf returns the shared sets a proxy is assigned.
func (s *Server) setsOf(id string) []string {
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	if st := s.sched.proxies[id]; st != nil {
		return slices.Clone(st.sets)
	}
	return nil
}
