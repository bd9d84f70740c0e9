package identity

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RootLoader loads the built-in root when the controller starts (making
// it on first start), and keeps trying while the API server or the mesh
// namespace is not there yet. It runs on every replica: each signs.
type RootLoader struct {
	// Client reads and creates the root's Secret; use one without a
	// cache, so that the controller does not watch every Secret.
	Client      client.Client
	Namespace   string
	TrustDomain string
	Log         logr.Logger
	// Retry is the wait between attempts (default 5 s).
	Retry time.Duration

	root atomic.Pointer[Root]
}

// NeedLeaderElection is false: every replica needs the root.
func (l *RootLoader) NeedLeaderElection() bool { return false }

// Start loads the root, retrying until it succeeds or ctx ends.
func (l *RootLoader) Start(ctx context.Context) error {
	retry := l.Retry
	if retry == 0 {
		retry = 5 * time.Second
	}
	for {
		root, err := LoadOrCreateRoot(ctx, l.Client, l.Namespace, l.TrustDomain, time.Now())
		if err == nil {
			l.root.Store(root)
			l.Log.Info("Loaded the mesh root CA", "secret", l.Namespace+"/"+RootSecretName,
				"subject", root.CA.Cert.Subject.CommonName, "notAfter", root.CA.Cert.NotAfter)
			<-ctx.Done()
			return nil
		}
		l.Log.Error(err, "Loading the mesh root CA failed; retrying", "in", retry)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// Root returns the root, or nil until it is loaded.
func (l *RootLoader) Root() *Root { return l.root.Load() }

// Bundle returns the roots the mesh trusts, PEM, or nil until loaded.
func (l *RootLoader) Bundle() []byte {
	if r := l.root.Load(); r != nil {
		return r.Bundle
	}
	return nil
}
