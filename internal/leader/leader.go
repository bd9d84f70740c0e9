// Package leader runs what only one replica of the controller may run (the
// status writers, the signers, the writers of published objects) in terms
// of leadership, while every replica serves (xDS, SDS, the webhook, the
// CA) whether it leads or not.
//
// controller-runtime's own leader election ends the process when the lease
// is lost, so a replica that loses the API server for longer than the
// lease would take its proxies' xDS streams and the injection webhook down
// with it. Here losing the lease ends only the term: what the term ran is
// stopped, and the replica campaigns again. Each term runs on a manager of
// its own over the main manager's cache, client and REST mapper, so that
// its controllers are new each time (a controller starts once) while no
// informer is started twice.
package leader

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weftmesh/weft/internal/metrics"
)

// The Lease is read, created and renewed (get, create, update), and each
// new leader recorded as an Event on it: the Role in
// config/rbac/leader_election_role.yaml and the chart's namespace Role.

// Defaults of the lease, as controller-runtime's.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Setup adds what a term runs to the term's manager.
type Setup func(term manager.Manager) error

// Elector campaigns for the Lease Namespace/Name and, while it holds it,
// runs a term: a new manager set up by every Setup. It is a runnable of
// the main manager that needs no leader election itself.
type Elector struct {
	// Main is the manager whose cache, client and REST mapper each term
	// shares; Config the API server's.
	Main   manager.Manager
	Config *rest.Config
	// Namespace and Name are the Lease's; Identity this replica's (unique
	// among the replicas).
	Namespace, Name, Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are the Defaults when
	// zero.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Setups                                    []Setup
	// Events, when set, records each new leader on the Lease.
	Events resourcelock.EventRecorder
	Log    logr.Logger
}

// NeedLeaderElection is false: the elector is what elects.
func (e *Elector) NeedLeaderElection() bool { return false }

// Start campaigns until ctx ends, and runs a term each time it leads. A
// term that fails to start is logged and its lease given up, so that
// another replica may try.
func (e *Elector) Start(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(rest.CopyConfig(e.Config))
	if err != nil {
		return fmt.Errorf("a client for the leader lease: %w", err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, e.Namespace, e.Name, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: e.Identity, EventRecorder: e.Events})
	if err != nil {
		return fmt.Errorf("the leader lease %s/%s: %w", e.Namespace, e.Name, err)
	}
	for ctx.Err() == nil {
		if err := e.campaign(ctx, lock); err != nil {
			return err
		}
	}
	return nil
}

// campaign waits for the lease and runs one term while it holds it. It
// returns when the term has stopped, or when ctx ends first.
func (e *Elector) campaign(ctx context.Context, lock resourcelock.Interface) error {
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	won := make(chan context.Context, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		LeaseDuration: or(e.LeaseDuration, DefaultLeaseDuration),
		RenewDeadline: or(e.RenewDeadline, DefaultRenewDeadline),
		RetryPeriod:   or(e.RetryPeriod, DefaultRetryPeriod),
		// The next term may begin on another replica as soon as this one
		// gives the lease up: the writers are idempotent.
		ReleaseOnCancel: true,
		Name:            e.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(termCtx context.Context) { won <- termCtx },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("the leader election: %w", err)
	}
	e.Log.Info("Campaigning for the leader lease", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		le.Run(runCtx)
	}()
	select {
	case termCtx := <-won:
		// The term ends when the lease is lost or ctx ends; a term that
		// fails on its own gives the lease up (cancelRun releases it).
		e.term(termCtx)
		cancelRun()
		<-ran
	case <-ran:
		// ctx ended before the lease was won.
	}
	return nil
}

// term runs one term until termCtx ends.
func (e *Elector) term(termCtx context.Context) {
	// Run gives up the lease when the term returns early.
	ctx, cancel := context.WithCancel(termCtx)
	defer cancel()
	metrics.LeaderTerms.Inc()
	metrics.Leader.Set(1)
	defer metrics.Leader.Set(0)
	e.Log.Info("Leading: starting the status writers", "identity", e.Identity)
	mgr, err := e.manager()
	if err == nil {
		for _, setup := range e.Setups {
			if err = setup(mgr); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = mgr.Start(ctx)
	}
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		e.Log.Error(err, "A term of leadership failed; giving up the lease")
	case termCtx.Err() != nil:
		e.Log.Info("No longer leading: the status writers stopped", "identity", e.Identity)
	}
}

// manager is a term's: the main manager's cache (started by the main
// manager, so the term's start only waits for it), client and REST
// mapper; no servers of its own.
func (e *Elector) manager() (manager.Manager, error) {
	main := e.Main
	return ctrl.NewManager(e.Config, ctrl.Options{
		Scheme: main.GetScheme(),
		MapperProvider: func(*rest.Config, *http.Client) (meta.RESTMapper, error) {
			return main.GetRESTMapper(), nil
		},
		NewCache:               func(*rest.Config, cache.Options) (cache.Cache, error) { return sharedCache{main.GetCache()}, nil },
		NewClient:              func(*rest.Config, client.Options) (client.Client, error) { return main.GetClient(), nil },
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 e.Log,
		// A term's controllers carry the names of the last term's.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
}

// sharedCache is the main manager's cache, which that manager starts: a
// term waits for it instead of starting it again.
type sharedCache struct{ cache.Cache }

func (c sharedCache) Start(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
