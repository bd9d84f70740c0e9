package controllers

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/debounce"
	"github.com/weftmesh/weft/internal/mesh"
)

// ModelWatcher rebuilds the mesh model whenever something it is built from
// changes, at most once per burst of changes, and hands each model to
// Publish. It runs on every replica: each serves proxies.
type ModelWatcher struct {
	Cache  cache.Cache
	Reader client.Reader
	// Quiet and MaxDelay bound the debounce: a rebuild waits for Quiet
	// without changes, but never more than MaxDelay after the first one.
	Quiet, MaxDelay time.Duration
	ClusterDomain   string
	// MeshNamespace holds the mesh-wide PeerAuthentication; TrustDomain
	// names the workloads' identities.
	MeshNamespace, TrustDomain string
	Clock                      clock.Clock
	Publish                    func(context.Context, *mesh.Model)

	// lastGood is what the last model applied (touched only by the
	// debouncer's one goroutine).
	lastGood mesh.Applied
}

// NeedLeaderElection is false: every replica needs the model.
func (w *ModelWatcher) NeedLeaderElection() bool { return false }

// Start watches, rebuilds and publishes until ctx ends.
func (w *ModelWatcher) Start(ctx context.Context) error {
	events := make(chan struct{}, 1)
	poke := func() {
		select {
		case events <- struct{}{}:
		default: // a change is already pending; the rebuild will see this one too
		}
	}
	everyChange := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	// Pods matter only for their labels (subset membership); their status
	// changes all the time.
	podLabels := toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		UpdateFunc: func(o, n any) {
			op, ok1 := o.(*corev1.Pod)
			np, ok2 := n.(*corev1.Pod)
			if !ok1 || !ok2 || !maps.Equal(op.Labels, np.Labels) {
				poke()
			}
		},
		DeleteFunc: func(any) { poke() },
	}
	for _, watch := range []struct {
		obj     client.Object
		handler toolscache.ResourceEventHandler
	}{
		{&corev1.Service{}, everyChange}, {&discoveryv1.EndpointSlice{}, everyChange}, {&corev1.Pod{}, podLabels},
		{&meshv1.MeshService{}, everyChange}, {&meshv1.TrafficPolicy{}, everyChange}, {&meshv1.PeerAuthentication{}, everyChange},
	} {
		inf, err := w.Cache.GetInformer(ctx, watch.obj)
		if err != nil {
			return fmt.Errorf("watching %T for the mesh model: %w", watch.obj, err)
		}
		if _, err := inf.AddEventHandler(watch.handler); err != nil {
			return fmt.Errorf("watching %T for the mesh model: %w", watch.obj, err)
		}
	}
	if !w.Cache.WaitForCacheSync(ctx) {
		return ctx.Err()
	}
	poke()
	log := ctrl.LoggerFrom(ctx).WithName("mesh-model")
	debounce.Run(ctx, w.Clock, events, w.Quiet, w.MaxDelay, func() {
		m, err := w.build(ctx)
		if err != nil {
			log.Error(err, "Rebuilding the mesh model failed; keeping the previous one")
			return
		}
		w.lastGood = m.Applied
		w.Publish(ctx, m)
	})
	return nil
}

func (w *ModelWatcher) build(ctx context.Context) (*mesh.Model, error) {
	in := mesh.Input{ClusterDomain: w.ClusterDomain, MeshNamespace: w.MeshNamespace, TrustDomain: w.TrustDomain, LastGood: w.lastGood}
	var (
		svcs   corev1.ServiceList
		slices discoveryv1.EndpointSliceList
		pods   corev1.PodList
		mss    meshv1.MeshServiceList
		tps    meshv1.TrafficPolicyList
		pas    meshv1.PeerAuthenticationList
	)
	for _, l := range []client.ObjectList{&svcs, &slices, &pods, &mss, &tps, &pas} {
		if err := w.Reader.List(ctx, l); err != nil {
			return nil, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	in.Services, in.EndpointSlices, in.Pods, in.MeshServices, in.TrafficPolicies = svcs.Items, slices.Items, pods.Items, mss.Items, tps.Items
	in.PeerAuthentications = pas.Items
	return mesh.Build(in), nil
}
