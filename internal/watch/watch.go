// Package watch is the first stage of weft's data plane: it follows the
// objects the mesh model is built from in the informer caches, and rebuilds
// the model (mesh.Build) at most once per burst of changes.
package watch

import (
	"context"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/debounce"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// What the model is built from, read from the cache on every replica.
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshservices;trafficpolicies;peerauthentications,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=services;pods;namespaces;nodes,verbs=list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=list;watch

// Watcher rebuilds the mesh model whenever something it is built from
// changes, at most once per burst of changes, and hands each model to
// Publish. It runs on every replica: each serves proxies.
type Watcher struct {
	Cache  cache.Cache
	Reader client.Reader
	// Quiet and MaxDelay bound the debounce: a rebuild waits for Quiet
	// without changes, but never more than MaxDelay after the first one.
	Quiet, MaxDelay time.Duration
	ClusterDomain   string
	// MeshNamespace holds the mesh-wide PeerAuthentication; TrustDomain
	// names the workloads' identities.
	MeshNamespace, TrustDomain string
	// DefaultInbound is who may call a MeshService without allow rules,
	// where its namespace's label does not say.
	DefaultInbound wire.DefaultInbound
	Clock          clock.Clock
	Publish        func(context.Context, *mesh.Model)

	// lastGood is what the last model applied (touched only by the
	// debouncer's one goroutine).
	lastGood mesh.Applied
}

// NeedLeaderElection is false: every replica needs the model.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start watches, rebuilds and publishes until ctx ends.
func (w *Watcher) Start(ctx context.Context) error {
	events := make(chan struct{}, 1)
	// first is when the oldest change not yet in a published model was
	// seen (Unix nanoseconds; 0: none), what the model's Changed says.
	var first atomic.Int64
	poke := func() {
		first.CompareAndSwap(0, w.Clock.Now().UnixNano())
		select {
		case events <- struct{}{}:
		default: // a change is already pending; the rebuild will see this one too
		}
	}
	// pokeWhen pokes on every add and delete, and on the updates that
	// matter says yes to (every update, when it is nil).
	pokeWhen := func(matters func(o, n client.Object) bool) toolscache.ResourceEventHandler {
		return toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { poke() },
			UpdateFunc: func(o, n any) {
				oo, ok1 := o.(client.Object)
				no, ok2 := n.(client.Object)
				if matters == nil || !ok1 || !ok2 || matters(oo, no) {
					poke()
				}
			},
			DeleteFunc: func(any) { poke() },
		}
	}
	everyChange := pokeWhen(nil)
	// Pods matter only for their labels (subset membership, what a
	// PeerAuthentication selects) and their node (locality), namespaces
	// and nodes for their labels (meshed or not; zone and region); the
	// rest of them changes all the time. Nodes are watched as metadata
	// alone.
	labelsOnly := pokeWhen(func(o, n client.Object) bool { return !maps.Equal(o.GetLabels(), n.GetLabels()) })
	podChange := pokeWhen(func(o, n client.Object) bool {
		op, ok1 := o.(*corev1.Pod)
		np, ok2 := n.(*corev1.Pod)
		return !maps.Equal(o.GetLabels(), n.GetLabels()) || !ok1 || !ok2 || op.Spec.NodeName != np.Spec.NodeName
	})
	// weft's own kinds matter for their spec: their status is what the
	// model's verdicts become, and must not rebuild it.
	specOnly := pokeWhen(func(o, n client.Object) bool {
		return o.GetGeneration() != n.GetGeneration() || o.GetUID() != n.GetUID()
	})
	for _, watch := range []struct {
		obj     client.Object
		handler toolscache.ResourceEventHandler
	}{
		{&corev1.Service{}, everyChange}, {&discoveryv1.EndpointSlice{}, everyChange}, {&corev1.Pod{}, podChange}, {&corev1.Namespace{}, labelsOnly}, {nodeMetadata(), labelsOnly},
		{&meshv1.MeshService{}, specOnly}, {&meshv1.TrafficPolicy{}, specOnly}, {&meshv1.PeerAuthentication{}, specOnly},
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
		// A change seen from here on is in this model or pokes the next
		// one (or both); it is never left out of both.
		var changed time.Time
		ns := first.Swap(0)
		if ns != 0 {
			changed = time.Unix(0, ns)
		}
		m, err := w.build(ctx, changed)
		if err != nil {
			// The next model carries the change.
			first.CompareAndSwap(0, ns)
			log.Error(err, "Rebuilding the mesh model failed; keeping the previous one")
			return
		}
		w.lastGood = m.Applied
		w.Publish(ctx, m)
	})
	return nil
}

// nodeMetadata is the object nodes are watched as: their metadata, all
// the model needs of them.
func nodeMetadata() *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}}
}

func (w *Watcher) build(ctx context.Context, changed time.Time) (*mesh.Model, error) {
	in := mesh.Input{ClusterDomain: w.ClusterDomain, MeshNamespace: w.MeshNamespace, TrustDomain: w.TrustDomain, DefaultInbound: w.DefaultInbound,
		LastGood: w.lastGood, Changed: changed}
	if err := List(ctx, w.Reader, &in); err != nil {
		return nil, err
	}
	return mesh.Build(in), nil
}

// List reads every object the model is built from into in, from a cache
// (the watcher) or from the API server (weft describe, trace and check,
// which build the same model from the same objects).
func List(ctx context.Context, r client.Reader, in *mesh.Input) error {
	var (
		svcs   corev1.ServiceList
		slices discoveryv1.EndpointSliceList
		pods   corev1.PodList
		nss    corev1.NamespaceList
		mss    meshv1.MeshServiceList
		tps    meshv1.TrafficPolicyList
		pas    meshv1.PeerAuthenticationList
		nodes  = metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "NodeList"}}
	)
	for _, l := range []client.ObjectList{&svcs, &slices, &pods, &nss, &mss, &tps, &pas, &nodes} {
		if err := r.List(ctx, l); err != nil {
			return fmt.Errorf("listing %T: %w", l, err)
		}
	}
	in.Services, in.EndpointSlices, in.Pods, in.MeshServices, in.TrafficPolicies = svcs.Items, slices.Items, pods.Items, mss.Items, tps.Items
	in.Namespaces, in.PeerAuthentications, in.Nodes = nss.Items, pas.Items, nodes.Items
	return nil
}
