// Package cabundle keeps the caBundle of weft's MutatingWebhookConfiguration
// equal to the roots of the mesh CA, when weft serves the injector with a
// certificate of its own (the default; with cert-manager, its cainjector
// does this instead). caBundle is the one field of the chart's objects that
// is filled at run time; nothing else in the configuration is touched.
package cabundle

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ErrNotLoaded says the mesh roots are not known yet.
var ErrNotLoaded = errors.New("the mesh CA is not loaded yet")

// Injector writes Bundle() into every webhook's clientConfig.caBundle of
// the MutatingWebhookConfiguration Name: when it starts, when Changed
// fires (a root rotation), and every Resync (someone may have emptied it).
// It writes nothing when the bundle is already there.
type Injector struct {
	// Client reads and patches the configuration; one without a cache (a
	// cache would list and watch every webhook configuration).
	Client  client.Client
	Name    string
	Bundle  func() []byte
	Changed <-chan struct{}
	Log     logr.Logger
	// Resync is how often the configuration is looked at again (default
	// one minute); Wait how soon while the roots are not loaded or a write
	// failed (default 2 s).
	Resync, Wait time.Duration
	// Grace is how long a CA found in the caBundle that is not one of the
	// mesh roots (cert-manager's, when the install switches from
	// cert-manager to weft's own certificate) stays trusted beside them, so
	// that replicas still serving the old certificate keep answering
	// during the rollout (default one hour, counted from when this
	// process first saw it).
	Grace time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	foreignSince map[string]time.Time
}

// NeedLeaderElection is true: one writer is enough, and every replica
// serves with a certificate the bundle trusts.
func (in *Injector) NeedLeaderElection() bool { return true }

// Start keeps the caBundle in place until ctx ends.
func (in *Injector) Start(ctx context.Context) error {
	resync, wait := in.Resync, in.Wait
	if resync == 0 {
		resync = time.Minute
	}
	if wait == 0 {
		wait = 2 * time.Second
	}
	for {
		next := resync
		switch err := in.Sync(ctx); {
		case errors.Is(err, ErrNotLoaded):
			in.Log.V(1).Info("Waiting for the mesh CA before filling the injector's caBundle")
			next = wait
		case err != nil:
			in.Log.Error(err, "Filling the injector's caBundle failed; retrying", "in", wait)
			next = wait
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-in.Changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// Sync writes the bundle into the configuration once, if it differs. The
// configuration not existing is not an error (the injector is off, or the
// chart has not created it yet); the roots not being loaded yet is.
func (in *Injector) Sync(ctx context.Context) error {
	bundle := in.Bundle()
	if len(bundle) == 0 {
		return ErrNotLoaded
	}
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := in.Client.Get(ctx, client.ObjectKey{Name: in.Name}, &cfg); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", in.Name, err)
	}
	before := cfg.DeepCopy()
	changed := false
	for i := range cfg.Webhooks {
		want := in.withForeign(bundle, cfg.Webhooks[i].ClientConfig.CABundle)
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, want) {
			cfg.Webhooks[i].ClientConfig.CABundle = want
			changed = true
		}
	}
	if !changed {
		return nil
	}
	// A merge patch with the resourceVersion: the webhooks list is
	// replaced as read, so a concurrent edit fails and is read again.
	if err := in.Client.Patch(ctx, &cfg, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("writing the caBundle of MutatingWebhookConfiguration %s: %w", in.Name, err)
	}
	in.Log.Info("Wrote the mesh roots into the injector's caBundle", "configuration", in.Name, "webhooks", len(cfg.Webhooks))
	return nil
}

// withForeign returns the mesh roots followed by the CA certificates of
// current that are not among them, while they are in their grace period
// and not expired.
func (in *Injector) withForeign(roots, current []byte) []byte {
	now := time.Now()
	if in.Now != nil {
		now = in.Now()
	}
	grace := in.Grace
	if grace == 0 {
		grace = time.Hour
	}
	if in.foreignSince == nil {
		in.foreignSince = map[string]time.Time{}
	}
	mine := map[string]bool{}
	for rest := roots; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		mine[string(b.Bytes)] = true
	}
	out := append([]byte(nil), roots...)
	for rest := current; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" || mine[string(b.Bytes)] {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil || !c.IsCA || now.After(c.NotAfter) {
			continue
		}
		since, ok := in.foreignSince[string(b.Bytes)]
		if !ok {
			since = now
			in.foreignSince[string(b.Bytes)] = now
		}
		if now.Sub(since) < grace {
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
	return out
}
