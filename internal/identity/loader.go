package identity

import (
	"bytes"
	"context"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/wire"
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
	// Retry is the wait between attempts (default 5 s); Reload how often
	// the Secret is read again to pick up a rotation (default 30 s).
	Retry, Reload time.Duration
	// OnChange, when set, is called after a rotation was picked up.
	OnChange func()
	// External says the Secret is made and renewed by someone else
	// (cert-manager, or the user): the loader waits for it and never
	// makes a root of its own.
	External bool
	// Events, when set, records each new signing CA the loader takes
	// (a rotation, or a renewal of the external CA) as an Event on the
	// CA's Secret.
	Events events.EventRecorder

	root atomic.Pointer[Root]
	// With an external CA: the trust anchors as last computed, whether the
	// ConfigMap that keeps them was read, and whether writing it failed
	// (then it is written again on the next load). Only the goroutine
	// that runs Start touches them.
	anchors     []Anchor
	anchorsRead bool
	anchorsOwed bool
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
		root, err := l.load(ctx)
		if err == nil {
			l.root.Store(root)
			l.Log.Info("Loaded the mesh root CA", "secret", l.Namespace+"/"+RootSecretName,
				"subject", root.CA.Cert.Subject.CommonName, "notAfter", root.CA.Cert.NotAfter)
			l.follow(ctx)
			return nil
		}
		if l.External && apierrors.IsNotFound(err) {
			l.Log.Info("Waiting for the external CA's Secret", "secret", l.Namespace+"/"+RootSecretName, "retryIn", retry)
		} else {
			l.Log.Error(err, "Loading the mesh root CA failed; retrying", "in", retry)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// follow reads the Secret again every Reload and takes a rotated root or
// bundle.
func (l *RootLoader) follow(ctx context.Context) {
	every := l.Reload
	if every == 0 {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next, err := l.load(ctx)
		if err != nil {
			l.Log.Error(err, "Reading the mesh root CA again failed; keeping the one loaded")
			continue
		}
		cur := l.root.Load()
		if next.CA.Cert.Equal(cur.CA.Cert) && bytes.Equal(next.Bundle, cur.Bundle) {
			continue
		}
		l.root.Store(next)
		l.Log.Info("Took the rotated mesh root CA", "subject", next.CA.Cert.Subject.CommonName, "notAfter", next.CA.Cert.NotAfter)
		if l.Events != nil && !next.CA.Cert.Equal(cur.CA.Cert) {
			anchors, _ := ParseCerts(next.Bundle)
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: l.Namespace, Name: RootSecretName}}
			l.Events.Eventf(secret, nil, corev1.EventTypeNormal, wire.EventCATaken, "Rotate",
				"weft signs with %q (serial %x, expires %s); the bundle holds %d certificates",
				next.CA.Cert.Subject.CommonName, next.CA.Cert.SerialNumber, next.CA.Cert.NotAfter.UTC().Format(time.RFC3339), len(anchors))
		}
		if l.OnChange != nil {
			l.OnChange()
		}
	}
}

func (l *RootLoader) load(ctx context.Context) (*Root, error) {
	if !l.External {
		return LoadOrCreateRoot(ctx, l.Client, l.Namespace, l.TrustDomain, time.Now())
	}
	root, err := LoadRoot(ctx, l.Client, l.Namespace)
	if err != nil {
		return nil, err
	}
	return l.anchor(ctx, root, time.Now())
}

// anchor replaces an external CA's bundle (the external roots) with the
// mesh's trust anchors: the CA weft signs with, and the ones it replaced
// while their leaves may be in use (NextAnchors). The external roots stay
// in ExternalRoots.
func (l *RootLoader) anchor(ctx context.Context, root *Root, now time.Time) (*Root, error) {
	if !l.anchorsRead {
		prev, err := readAnchors(ctx, l.Client, l.Namespace)
		if err != nil {
			return nil, err
		}
		l.anchors, l.anchorsRead = prev, true
	}
	next := NextAnchors(l.anchors, root.CA.Cert, now)
	if l.anchorsOwed || !sameAnchors(next, l.anchors) {
		l.anchorsOwed = false
		if err := writeAnchors(ctx, l.Client, l.Namespace, next); err != nil {
			// The anchors hold in memory; a restart before the next write
			// would forget a replaced CA early.
			l.anchorsOwed = true
			l.Log.Error(err, "Keeping the mesh's trust anchors failed; trying again on the next reload")
		} else if len(next) > 1 {
			l.Log.Info("The mesh trusts replaced signing CAs until their leaves may have expired", "anchors", len(next))
		}
	}
	l.anchors = next
	root.ExternalRoots, root.Bundle, root.Anchors = root.Bundle, AnchorsPEM(next), next
	return root, nil
}

// Root returns the root, or nil until it is loaded.
func (l *RootLoader) Root() *Root { return l.root.Load() }

// Bundle returns the roots the mesh trusts, PEM, or nil until loaded:
// with an external CA, the trust anchors (see NextAnchors).
func (l *RootLoader) Bundle() []byte {
	if r := l.root.Load(); r != nil {
		return r.Bundle
	}
	return nil
}
