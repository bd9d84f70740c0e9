package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/status"
	"github.com/weftmesh/weft/internal/wire"
)

// PeerAuthenticationReconciler keeps a PeerAuthentication's conditions,
// scope and workload count true to the world: the pods it covers and the
// other PeerAuthentications of the same scope.
type PeerAuthenticationReconciler struct {
	Client    client.Client
	Status    status.Writer
	Readiness status.Writer
	// MeshNamespace is the control plane's namespace, where a policy
	// without selector covers the whole mesh.
	MeshNamespace string
}

// peerAuthScope is everything one reconcile reads, read once.
type peerAuthScope struct {
	pa    *meshv1.PeerAuthentication
	scope meshv1.PeerAuthenticationScope
	// selector is the parsed spec.selector; nil for mesh and namespace
	// scope, or when it does not parse (selectorErr says why).
	selector    labels.Selector
	selectorErr error
	// pods are the pods the policy covers.
	pods []corev1.Pod
	// peers are the namespace's PeerAuthentications, this one included.
	peers []meshv1.PeerAuthentication
	// peerPods are the pods each selector-based peer covers, by name.
	peerPods map[string][]corev1.Pod
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=peerauthentications,verbs=list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=peerauthentications/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=list;watch

// Reconcile brings one PeerAuthentication's status up to date.
func (r *PeerAuthenticationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return reconcileStatus(ctx, r.Client, req, &meshv1.PeerAuthentication{}, r.readScope, r.writeStatus)
}

func (r *PeerAuthenticationReconciler) readScope(ctx context.Context, pa *meshv1.PeerAuthentication) (*peerAuthScope, error) {
	s := &peerAuthScope{pa: pa, scope: r.scopeOf(pa), peerPods: map[string][]corev1.Pod{}}
	peers := &meshv1.PeerAuthenticationList{}
	if err := r.Client.List(ctx, peers, client.InNamespace(pa.Namespace)); err != nil {
		return nil, fmt.Errorf("listing PeerAuthentications in %s: %w", pa.Namespace, err)
	}
	s.peers = peers.Items

	var err error
	switch s.scope {
	case meshv1.ScopeMesh:
		s.pods, err = r.meshedPods(ctx)
	case meshv1.ScopeNamespace:
		s.pods, err = r.pods(ctx, pa.Namespace, labels.Everything())
	case meshv1.ScopeWorkload:
		if s.selector, s.selectorErr = metav1.LabelSelectorAsSelector(pa.Spec.Selector); s.selectorErr != nil {
			return s, nil
		}
		if s.pods, err = r.pods(ctx, pa.Namespace, s.selector); err != nil {
			return nil, err
		}
		// Peers that select the same pods conflict; read what each covers.
		for _, peer := range s.peers {
			if peer.Name == pa.Name || peer.Spec.Selector == nil {
				continue
			}
			sel, perr := metav1.LabelSelectorAsSelector(peer.Spec.Selector)
			if perr != nil {
				continue
			}
			if s.peerPods[peer.Name], err = r.pods(ctx, pa.Namespace, sel); err != nil {
				return nil, err
			}
		}
	}
	return s, err
}

func (r *PeerAuthenticationReconciler) scopeOf(pa *meshv1.PeerAuthentication) meshv1.PeerAuthenticationScope {
	switch {
	case pa.Spec.Selector != nil:
		return meshv1.ScopeWorkload
	case pa.Namespace == r.MeshNamespace:
		return meshv1.ScopeMesh
	default:
		return meshv1.ScopeNamespace
	}
}

func (r *PeerAuthenticationReconciler) pods(ctx context.Context, namespace string, sel labels.Selector) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := r.Client.List(ctx, list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing pods in %s matching %q: %w", namespace, sel, err)
	}
	return list.Items, nil
}

// meshedPods lists the pods of every namespace that opted into the mesh.
func (r *PeerAuthenticationReconciler) meshedPods(ctx context.Context) ([]corev1.Pod, error) {
	nss := &corev1.NamespaceList{}
	if err := r.Client.List(ctx, nss, client.MatchingLabels{wire.LabelInject: wire.InjectEnabled}); err != nil {
		return nil, fmt.Errorf("listing meshed namespaces: %w", err)
	}
	var out []corev1.Pod
	for _, ns := range nss.Items {
		pods, err := r.pods(ctx, ns.Name, labels.Everything())
		if err != nil {
			return nil, err
		}
		out = append(out, pods...)
	}
	return out, nil
}

// SetupWithManager registers the reconciler and what it watches.
func (r *PeerAuthenticationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1.PeerAuthentication{}).
		Watches(&meshv1.PeerAuthentication{}, handler.EnqueueRequestsFromMapFunc(r.inNamespaceOf),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.coveringPod),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.meshWide),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Complete(r)
}

func (r *PeerAuthenticationReconciler) inNamespaceOf(ctx context.Context, o client.Object) []reconcile.Request {
	return requestsFor(ctx, r.Client, &meshv1.PeerAuthenticationList{}, client.InNamespace(o.GetNamespace()))
}

// coveringPod maps a pod to the policies that may cover it: those of its
// namespace, and the mesh-wide ones.
func (r *PeerAuthenticationReconciler) coveringPod(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := r.inNamespaceOf(ctx, o)
	if o.GetNamespace() != r.MeshNamespace {
		reqs = append(reqs, r.meshWide(ctx, o)...)
	}
	return reqs
}

func (r *PeerAuthenticationReconciler) meshWide(ctx context.Context, _ client.Object) []reconcile.Request {
	return requestsFor(ctx, r.Client, &meshv1.PeerAuthenticationList{}, client.InNamespace(r.MeshNamespace))
}
