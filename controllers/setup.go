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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
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
	// TrustDomain is the SPIFFE trust domain (cluster.local).
	TrustDomain string
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
}

// Setup registers every reconciler with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	writer := func(owner string) status.Writer {
		return status.Writer{Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Owner: owner}
	}
	readiness := writer(FieldOwnerReadiness)
	var msAcks, tpAcks chan event.GenericEvent
	if o.Proxies != nil {
		msAcks, tpAcks = make(chan event.GenericEvent), make(chan event.GenericEvent)
		if err := mgr.Add(&ackRelay{proxies: o.Proxies, reader: mgr.GetClient(), meshServices: msAcks, policies: tpAcks}); err != nil {
			return fmt.Errorf("adding the acknowledgement relay: %w", err)
		}
	}
	if err := (&MeshServiceReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerMeshService), Readiness: readiness,
		Proxies: o.Proxies, Acks: msAcks,
	}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the MeshService reconciler: %w", err)
	}
	if err := (&TrafficPolicyReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerTrafficPolicy), Readiness: readiness,
		Proxies: o.Proxies, Acks: tpAcks,
	}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the TrafficPolicy reconciler: %w", err)
	}
	if err := (&PeerAuthenticationReconciler{
		Client: mgr.GetClient(), Status: writer(FieldOwnerPeerAuthentication), Readiness: readiness,
		MeshNamespace: o.MeshNamespace,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the PeerAuthentication reconciler: %w", err)
	}
	if o.PodCertificates != nil {
		o.PodCertificates.Client = mgr.GetClient()
		if err := o.PodCertificates.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the pod certificate signer: %w", err)
		}
	}
	if o.Bundle != nil {
		if err := (&BundleReconciler{Client: mgr.GetClient(), ConfigMaps: mgr.GetAPIReader(), Bundle: o.Bundle, Changed: o.BundleChanged}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the root bundle publisher: %w", err)
		}
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
		MeshNamespace: o.MeshNamespace, TrustDomain: cmp.Or(o.TrustDomain, "cluster.local"),
	}); err != nil {
		return fmt.Errorf("adding the mesh model watcher: %w", err)
	}
	return nil
}

// ackRelay turns "what the proxies acknowledged changed" into a look at
// every MeshService and TrafficPolicy (the reconcilers send nothing when
// nothing changed for them).
type ackRelay struct {
	proxies      ProxyView
	reader       client.Reader
	meshServices chan<- event.GenericEvent
	policies     chan<- event.GenericEvent
}

// NeedLeaderElection is true: only the leader writes status.
func (a *ackRelay) NeedLeaderElection() bool { return true }

func (a *ackRelay) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.proxies.Changes():
		}
		var mss meshv1.MeshServiceList
		var tps meshv1.TrafficPolicyList
		if err := a.reader.List(ctx, &mss); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing MeshServices after an acknowledgement failed")
			continue
		}
		if err := a.reader.List(ctx, &tps); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing TrafficPolicies after an acknowledgement failed")
			continue
		}
		for i := range mss.Items {
			select {
			case a.meshServices <- event.GenericEvent{Object: &mss.Items[i]}:
			case <-ctx.Done():
				return nil
			}
		}
		for i := range tps.Items {
			select {
			case a.policies <- event.GenericEvent{Object: &tps.Items[i]}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
