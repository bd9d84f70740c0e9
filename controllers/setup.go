// Package controllers holds one reconciler per weft kind. Each reads the
// world once into a scope, derives its conditions with small ordered checks
// (pure functions, tested without an API server), and applies only the
// status fields it owns.
package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/status"
)

// Field managers of the status writers. Each condition has one writer.
const (
	FieldOwnerMeshService        = "weft-meshservice"
	FieldOwnerTrafficPolicy      = "weft-trafficpolicy"
	FieldOwnerPeerAuthentication = "weft-peerauthentication"
	// FieldOwnerReadiness writes Ready. Until proxies are fed it says
	// Pending; the xDS acknowledgement tracker takes this role over.
	FieldOwnerReadiness = "weft-readiness"
)

// Options configure the reconcilers.
type Options struct {
	// MeshNamespace is the control plane's namespace.
	MeshNamespace string
	// ClusterDomain is the cluster's DNS domain (cluster.local).
	ClusterDomain string
	// ModelQuiet and ModelMaxDelay bound the mesh model's debounce
	// (defaults 100 ms and 1 s).
	ModelQuiet, ModelMaxDelay time.Duration
	// OnModel receives each rebuilt mesh model; nil logs its size.
	OnModel func(context.Context, *mesh.Model)
}

// Setup registers every reconciler with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	writer := func(owner string) status.Writer {
		return status.Writer{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Owner: owner}
	}
	readiness := writer(FieldOwnerReadiness)
	if err := (&MeshServiceReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerMeshService), Readiness: readiness,
	}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the MeshService reconciler: %w", err)
	}
	if err := (&TrafficPolicyReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerTrafficPolicy), Readiness: readiness,
	}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the TrafficPolicy reconciler: %w", err)
	}
	if err := (&PeerAuthenticationReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerPeerAuthentication), Readiness: readiness,
		MeshNamespace: o.MeshNamespace,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the PeerAuthentication reconciler: %w", err)
	}
	onModel := o.OnModel
	if onModel == nil {
		onModel = func(ctx context.Context, m *mesh.Model) {
			ctrl.LoggerFrom(ctx).V(1).Info("Rebuilt the mesh model", "services", len(m.Order))
		}
	}
	if err := mgr.Add(&ModelWatcher{
		Cache: mgr.GetCache(), Reader: mgr.GetClient(), Clock: clock.RealClock{},
		Quiet: cmp.Or(o.ModelQuiet, 100*time.Millisecond), MaxDelay: cmp.Or(o.ModelMaxDelay, time.Second),
		ClusterDomain: cmp.Or(o.ClusterDomain, "cluster.local"), Publish: onModel,
	}); err != nil {
		return fmt.Errorf("adding the mesh model watcher: %w", err)
	}
	return nil
}
