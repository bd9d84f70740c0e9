package controllers

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// verdictBoard holds the latest mesh model's verdicts for the status
// writers, and what changed since they last looked.
type verdictBoard struct {
	mu       sync.Mutex
	verdicts map[mesh.Ref]mesh.Verdict
	// pending are the objects whose verdict changed and that no status
	// writer has been sent yet; wake says there are some.
	pending map[mesh.Ref]struct{}
	wake    chan struct{}
}

func newVerdictBoard() *verdictBoard {
	return &verdictBoard{pending: map[mesh.Ref]struct{}{}, wake: make(chan struct{}, 1)}
}

// publish takes a new model's verdicts.
func (b *verdictBoard) publish(m *mesh.Model) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ref, v := range m.Verdicts {
		if old, ok := b.verdicts[ref]; !ok || old != v {
			b.pending[ref] = struct{}{}
		}
	}
	b.verdicts = m.Verdicts
	if len(b.pending) > 0 {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// Verdict returns an object's verdict in the latest model.
func (b *verdictBoard) Verdict(ref mesh.Ref) (mesh.Verdict, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.verdicts[ref]
	return v, ok
}

// take returns the pending objects, or every judged object when all is
// set, and clears the pending ones.
func (b *verdictBoard) take(all bool) []mesh.Ref {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []mesh.Ref
	if all {
		for ref := range b.verdicts {
			out = append(out, ref)
		}
	} else {
		for ref := range b.pending {
			out = append(out, ref)
		}
	}
	clear(b.pending)
	return out
}

// relay sends the status writers the objects to look at again: those whose
// verdict changed, and all of them when what the proxies acknowledged
// changed (the writers send nothing when nothing changed for them).
type relay struct {
	board   *verdictBoard
	proxies ProxyView
	// queues by kind.
	queues map[string]chan event.GenericEvent
}

func newRelay(board *verdictBoard, proxies ProxyView) *relay {
	r := &relay{board: board, proxies: proxies, queues: map[string]chan event.GenericEvent{}}
	for _, kind := range []string{mesh.KindMeshService, mesh.KindTrafficPolicy, mesh.KindPeerAuthentication} {
		r.queues[kind] = make(chan event.GenericEvent)
	}
	return r
}

// NeedLeaderElection is true: only the leader writes status.
func (r *relay) NeedLeaderElection() bool { return true }

func (r *relay) Start(ctx context.Context) error {
	var acks <-chan struct{}
	if r.proxies != nil {
		acks = r.proxies.Changes()
	}
	// Whatever was judged before this replica led is pending too.
	refs := r.board.take(true)
	for {
		for _, ref := range refs {
			select {
			case r.queues[ref.Kind] <- event.GenericEvent{Object: objectOf(ref)}:
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.board.wake:
			refs = r.board.take(false)
		case <-acks:
			refs = r.board.take(true)
		}
	}
}

// objectOf is an empty object of ref's kind and name, enough to enqueue.
func objectOf(ref mesh.Ref) client.Object {
	meta := metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}
	switch ref.Kind {
	case mesh.KindMeshService:
		return &meshv1.MeshService{ObjectMeta: meta}
	case mesh.KindTrafficPolicy:
		return &meshv1.TrafficPolicy{ObjectMeta: meta}
	}
	return &meshv1.PeerAuthentication{ObjectMeta: meta}
}

// VerdictSource is where the status writers read verdicts.
type VerdictSource interface {
	Verdict(mesh.Ref) (mesh.Verdict, bool)
}

// currentVerdict reads the object req names and its verdict. ok is false
// when there is nothing to write: the object is gone or going, or the
// model has not judged its current generation yet (the relay sends it
// again once it has).
func currentVerdict(ctx context.Context, c client.Client, verdicts VerdictSource, req ctrl.Request, kind string, obj client.Object) (mesh.Verdict, bool, error) {
	if err := c.Get(ctx, req.NamespacedName, obj); err != nil {
		return mesh.Verdict{}, false, client.IgnoreNotFound(err)
	}
	if !obj.GetDeletionTimestamp().IsZero() {
		return mesh.Verdict{}, false, nil
	}
	v, ok := verdicts.Verdict(mesh.Ref{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName()})
	if !ok || v.Generation != obj.GetGeneration() {
		return mesh.Verdict{}, false, nil
	}
	return v, true, nil
}

// conditionsOf renders a verdict as the reconciler's conditions.
func conditionsOf(v mesh.Verdict) []metav1.Condition {
	conds := withStalled(conditionOf(meshv1.ConditionAccepted, v.Accepted, v.Generation),
		conditionOf(meshv1.ConditionResolvedRefs, v.ResolvedRefs, v.Generation))
	// After Stalled: rules that do not hold are the mesh's state, not a
	// failure of the resource.
	if v.RulesEnforced.Reason != "" {
		conds = append(conds, conditionOf(meshv1.ConditionRulesEnforced, v.RulesEnforced, v.Generation))
	}
	return conds
}

func conditionOf(t string, c mesh.Check, gen int64) metav1.Condition {
	if c.OK {
		return trueCondition(t, c.Reason, c.Message, gen)
	}
	return falseCondition(t, c.Reason, c.Message, gen)
}
