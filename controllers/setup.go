// Package controllers holds one reconciler per weft kind. Each reads the
// world once into a scope, derives its conditions with small ordered checks
// (pure functions, tested without an API server), and applies only the
// status fields it owns.
package controllers

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

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
	return nil
}
