// Package controllers writes the status of weft's kinds and signs what
// weft signs. The status writers (one reconciler per kind) judge nothing:
// they write the verdict the mesh model (package mesh) gave each object's
// current generation, and Ready from what the proxies acknowledged.
package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/weftmesh/weft/internal/leader"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/status"
	"github.com/weftmesh/weft/internal/watch"
	"github.com/weftmesh/weft/internal/wire"
)

// Field managers of the status writers. Each condition has one writer.
const (
	FieldOwnerMeshService        = "weft-meshservice"
	FieldOwnerTrafficPolicy      = "weft-trafficpolicy"
	FieldOwnerPeerAuthentication = "weft-peerauthentication"
	// FieldOwnerReadiness writes Ready (and status.proxies) from what the
	// proxies acknowledged (ProxyView); with none connected, Synced.
	FieldOwnerReadiness = "weft-readiness"
)

// Options configure the reconcilers.
type Options struct {
	// MeshNamespace is the control plane's namespace.
	MeshNamespace string
	// ClusterDomain is the cluster's DNS domain (cluster.local).
	ClusterDomain string
	// TrustDomain is the SPIFFE trust domain (cluster.local).
	TrustDomain string
	// DefaultInbound is who may call a MeshService without allow rules,
	// where its namespace's label does not say (default all).
	DefaultInbound wire.DefaultInbound
	// ModelQuiet and ModelMaxDelay bound the mesh model's debounce
	// (defaults 100 ms and 1 s).
	ModelQuiet, ModelMaxDelay time.Duration
	// OnModel receives each rebuilt mesh model; nil logs its size.
	OnModel func(context.Context, *mesh.Model)
	// Proxies, when set (the xDS server), says what proxies acknowledged;
	// Ready and status.proxies follow it.
	Proxies ProxyView
	// Bundle, when set, returns the roots the mesh trusts, published in
	// every meshed namespace.
	Bundle func() []byte
	// BundleChanged, when set, says the bundle changed (a root rotation).
	BundleChanged <-chan struct{}
	// PodCertificates, when set, signs the PodCertificateRequests for its
	// signer name.
	PodCertificates *PodCertificateSigner
	// Events, when set, records the transitions people look for as
	// Events: a resource whose configuration a proxy rejected, a pod
	// certificate refused.
	Events events.EventRecorder
	// Leading, when set, takes what only the leader runs (the status
	// writers, the pod certificate signer, the bundle publisher) to run in
	// each term of leadership (leader.Elector); without it they run on the
	// manager, under its own leader election if it has one.
	Leading func(leader.Setup)
}

// Events: a resource whose configuration a proxy rejected, and the pod of
// that proxy (the xDS server's); patch folds a repeat into the same Event.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Setup registers every reconciler with the manager, and the watch stage
// that builds the mesh model on every replica.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	board := newVerdictBoard()
	writers := func(mgr ctrl.Manager) error { return setupWriters(mgr, board, o) }
	if o.Leading != nil {
		o.Leading(writers)
	} else if err := writers(mgr); err != nil {
		return err
	}
	onModel := o.OnModel
	if onModel == nil {
		onModel = func(ctx context.Context, m *mesh.Model) {
			ctrl.LoggerFrom(ctx).V(1).Info("Rebuilt the mesh model", "services", len(m.Order))
		}
	}
	if err := mgr.Add(&watch.Watcher{
		Cache: mgr.GetCache(), Reader: mgr.GetClient(), Clock: clock.RealClock{},
		Quiet: cmp.Or(o.ModelQuiet, 100*time.Millisecond), MaxDelay: cmp.Or(o.ModelMaxDelay, time.Second),
		ClusterDomain: cmp.Or(o.ClusterDomain, "cluster.local"),
		// Proxies first, then the status writers: a verdict is never
		// written before the model that holds it is served.
		Publish: func(ctx context.Context, m *mesh.Model) {
			onModel(ctx, m)
			board.publish(m)
		},
		MeshNamespace: o.MeshNamespace, TrustDomain: cmp.Or(o.TrustDomain, "cluster.local"), DefaultInbound: o.DefaultInbound,
	}); err != nil {
		return fmt.Errorf("adding the mesh model watcher: %w", err)
	}
	return nil
}

// setupWriters registers what only the leader runs, reading the verdicts
// from board.
func setupWriters(mgr ctrl.Manager, board *verdictBoard, o Options) error {
	writer := func(owner string) status.Writer {
		return status.Writer{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Owner: owner}
	}
	readiness := writer(FieldOwnerReadiness)
	again := newRelay(board, o.Proxies)
	if err := mgr.Add(again); err != nil {
		return fmt.Errorf("adding the status relay: %w", err)
	}
	if err := (&MeshServiceReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerMeshService), Readiness: readiness,
		Verdicts: board, Proxies: o.Proxies, Again: again.queues[mesh.KindMeshService], Events: o.Events,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the MeshService reconciler: %w", err)
	}
	if err := (&TrafficPolicyReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerTrafficPolicy), Readiness: readiness,
		Verdicts: board, Proxies: o.Proxies, Again: again.queues[mesh.KindTrafficPolicy], Events: o.Events,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the TrafficPolicy reconciler: %w", err)
	}
	if err := (&PeerAuthenticationReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerPeerAuthentication), Readiness: readiness,
		Verdicts: board, Proxies: o.Proxies, Again: again.queues[mesh.KindPeerAuthentication], Events: o.Events,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the PeerAuthentication reconciler: %w", err)
	}
	if o.PodCertificates != nil {
		signer := *o.PodCertificates
		signer.Client, signer.Events = mgr.GetClient(), o.Events
		if err := signer.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the pod certificate signer: %w", err)
		}
	}
	if o.Bundle != nil {
		if err := (&BundleReconciler{Client: mgr.GetClient(), ConfigMaps: mgr.GetAPIReader(), Bundle: o.Bundle, Changed: o.BundleChanged}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the root bundle publisher: %w", err)
		}
	}
	return nil
}
