package identity

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultTrustBundle is the ConfigMap that holds the mesh's trust bundle
// when an issuer weft asks signs the leaves (--ca=cert-manager): the key
// ca.crt, as trust-manager writes it, or the issuer's CA put there by hand.
const DefaultTrustBundle = "weft-trust-bundle"

// BundleLoader reads the mesh's trust bundle from a ConfigMap that someone
// else keeps (trust-manager, or the user) and follows its changes: weft
// holds no CA, and the bundle is what every peer, the webhook's caBundle
// and the issuer's answers are checked against. It runs on every replica.
type BundleLoader struct {
	// Client reads the ConfigMap; use one without a cache.
	Client    client.Client
	Namespace string
	// Name is the ConfigMap (DefaultTrustBundle when empty); its key
	// ca.crt holds PEM certificates.
	Name string
	Log  logr.Logger
	// Retry is the wait between attempts until the bundle is first read
	// (default 5 s); Reload how often it is read again (default 30 s).
	Retry, Reload time.Duration
	// OnChange, when set, is called after a changed bundle was taken.
	OnChange func()

	bundle atomic.Pointer[[]byte]
}

// NeedLeaderElection is false: every replica needs the bundle.
func (l *BundleLoader) NeedLeaderElection() bool { return false }

func (l *BundleLoader) name() string {
	if l.Name == "" {
		return DefaultTrustBundle
	}
	return l.Name
}

// Start reads the bundle until it succeeds, then follows it until ctx
// ends. A bundle that turns unreadable or empty leaves the last good one
// in force.
func (l *BundleLoader) Start(ctx context.Context) error {
	retry, reload := l.Retry, l.Reload
	if retry == 0 {
		retry = 5 * time.Second
	}
	if reload == 0 {
		reload = 30 * time.Second
	}
	wait := retry
	for {
		next, err := l.read(ctx)
		cur := l.Bundle()
		switch {
		case err != nil && cur == nil:
			l.Log.Info("Waiting for the mesh's trust bundle", "configMap", l.Namespace+"/"+l.name(), "reason", err.Error(), "retryIn", retry)
		case err != nil:
			l.Log.Error(err, "Reading the mesh's trust bundle again failed; keeping the one loaded")
		case !bytes.Equal(next, cur):
			l.bundle.Store(&next)
			certs, _ := ParseCerts(next)
			l.Log.Info("Took the mesh's trust bundle", "configMap", l.Namespace+"/"+l.name(), "certificates", len(certs))
			wait = reload
			if cur != nil && l.OnChange != nil {
				l.OnChange()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// read returns the bundle's certificates, PEM, re-encoded: only
// certificates reach a peer, never what else the key held.
func (l *BundleLoader) read(ctx context.Context) ([]byte, error) {
	var cm corev1.ConfigMap
	if err := l.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: l.name()}, &cm); err != nil {
		return nil, fmt.Errorf("reading the trust bundle %s/%s: %w", l.Namespace, l.name(), err)
	}
	certs, err := ParseCerts([]byte(cm.Data[BundleKey]))
	if err != nil {
		return nil, fmt.Errorf("the trust bundle %s/%s, key %s: %w", l.Namespace, l.name(), BundleKey, err)
	}
	ders := make([][]byte, len(certs))
	for i, c := range certs {
		ders[i] = c.Raw
	}
	return EncodeCerts(ders), nil
}

// Bundle returns the trust bundle, PEM, or nil until it is read.
func (l *BundleLoader) Bundle() []byte {
	if b := l.bundle.Load(); b != nil {
		return *b
	}
	return nil
}
