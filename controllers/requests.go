package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// reconcileStatus is the shape every reconciler shares: read the object
// (gone or being deleted: nothing to do), read the world into a scope,
// write status from it.
func reconcileStatus[T client.Object, S any](ctx context.Context, c client.Client, req ctrl.Request, obj T,
	read func(context.Context, T) (S, error), write func(context.Context, S) error) (ctrl.Result, error) {
	if err := c.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.GetDeletionTimestamp().IsZero() {
		return ctrl.Result{}, nil
	}
	scope, err := read(ctx, obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, write(ctx, scope)
}

// requestsFor lists objects from the cache and returns a reconcile request
// for each. A failed list is logged and yields no requests: the next event
// or resync brings the objects back.
func requestsFor(ctx context.Context, c client.Client, list client.ObjectList, opts ...client.ListOption) []reconcile.Request {
	if err := c.List(ctx, list, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing objects to reconcile failed", "list", list.GetObjectKind().GroupVersionKind().Kind)
		return nil
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Reading a list failed")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(items))
	for _, it := range items {
		if o, ok := it.(client.Object); ok {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)})
		}
	}
	return reqs
}
