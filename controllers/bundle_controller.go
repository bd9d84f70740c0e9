package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
)

// The root bundle's ConfigMap in each meshed namespace is
// wire.BundleConfigMap, its key wire.BundleKey.
const (
	// FieldOwnerBundle writes the bundle ConfigMaps.
	FieldOwnerBundle = "weft-bundle"
	// bundleResync restores a bundle someone deleted or changed, at the
	// latest after this long.
	bundleResync = 10 * time.Minute
	// bundleWait is how soon to look again while the root is not loaded.
	bundleWait = 2 * time.Second
)

// The bundle ConfigMaps in meshed namespaces: get (is it weft's, before
// deleting it), create and patch (server-side apply), delete (when a
// namespace leaves the mesh).
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;patch;delete

// BundleReconciler publishes the roots the mesh trusts in every meshed
// namespace (labelled for injection, or holding a MeshService), and takes
// them away from a namespace that leaves the mesh. ConfigMaps are not
// watched (a cache of every ConfigMap in the cluster costs more than it
// saves): the bundle is applied on every change of a namespace or its
// MeshServices, and again every bundleResync.
type BundleReconciler struct {
	Client client.Client
	// ConfigMaps reads bundle ConfigMaps straight from the API server
	// (the manager's API reader): reading them through Client would start
	// a cluster-wide ConfigMap informer, which needs list and watch on
	// every ConfigMap.
	ConfigMaps client.Reader
	// Bundle returns the PEM roots to publish (empty until they are
	// known); Changed, when set, says they changed (a rotation), and every
	// namespace is looked at again.
	Bundle  func() []byte
	Changed <-chan struct{}
}

// Reconcile publishes or removes one namespace's bundle.
func (r *BundleReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, client.ObjectKey{Name: req.Name}, &ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	meshed, err := r.meshed(ctx, &ns)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !meshed || ns.DeletionTimestamp != nil {
		return reconcile.Result{}, r.remove(ctx, ns.Name)
	}
	bundle := r.Bundle()
	if len(bundle) == 0 {
		return reconcile.Result{RequeueAfter: bundleWait}, nil // the root is not loaded yet
	}
	cm := applycorev1.ConfigMap(wire.BundleConfigMap, ns.Name).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": "weft"}).
		WithData(map[string]string{wire.BundleKey: string(bundle)})
	if err := r.Client.Apply(ctx, cm, client.FieldOwner(FieldOwnerBundle), client.ForceOwnership); err != nil {
		return reconcile.Result{}, fmt.Errorf("publishing the root bundle in %s: %w", ns.Name, err)
	}
	return reconcile.Result{RequeueAfter: bundleResync}, nil
}

// meshed says whether a namespace takes part in the mesh.
func (r *BundleReconciler) meshed(ctx context.Context, ns *corev1.Namespace) (bool, error) {
	if ns.Labels[wire.LabelInject] == wire.InjectEnabled {
		return true, nil
	}
	var list meshv1.MeshServiceList
	if err := r.Client.List(ctx, &list, client.InNamespace(ns.Name), client.Limit(1)); err != nil {
		return false, fmt.Errorf("listing the MeshServices of %s: %w", ns.Name, err)
	}
	return len(list.Items) > 0, nil
}

// remove deletes the namespace's bundle if weft made it.
func (r *BundleReconciler) remove(ctx context.Context, namespace string) error {
	var cm corev1.ConfigMap
	err := r.ConfigMaps.Get(ctx, client.ObjectKey{Namespace: namespace, Name: wire.BundleConfigMap}, &cm)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the root bundle of %s: %w", namespace, err)
	}
	if cm.Labels["app.kubernetes.io/managed-by"] != "weft" {
		return nil // not ours
	}
	err = r.Client.Delete(ctx, &cm, client.Preconditions{UID: &cm.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the root bundle of %s: %w", namespace, err)
	}
	return nil
}

// SetupWithManager watches namespaces and MeshServices.
func (r *BundleReconciler) SetupWithManager(mgr manager.Manager) error {
	toNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetNamespace()}}}
	})
	b := builder.ControllerManagedBy(mgr).
		Named("bundle").
		For(&corev1.Namespace{}).
		Watches(&meshv1.MeshService{}, toNamespace)
	if r.Changed != nil {
		events := make(chan event.GenericEvent)
		if err := mgr.Add(&allNamespaces{reader: mgr.GetClient(), changed: r.Changed, out: events}); err != nil {
			return err
		}
		b = b.WatchesRawSource(source.Channel(events, &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}

// allNamespaces turns each bundle change into an event per namespace.
type allNamespaces struct {
	reader  client.Reader
	changed <-chan struct{}
	out     chan<- event.GenericEvent
}

func (a *allNamespaces) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.changed:
		}
		var list corev1.NamespaceList
		if err := a.reader.List(ctx, &list); err != nil {
			ctrllog.FromContext(ctx).Error(err, "Listing namespaces to publish the rotated root bundle")
			continue
		}
		for i := range list.Items {
			select {
			case a.out <- event.GenericEvent{Object: &list.Items[i]}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
