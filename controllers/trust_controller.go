package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/status"
	"github.com/weftmesh/weft/internal/wire"
)

// The MeshTrust: read (its conditions, before writing them), created once,
// its status applied.
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshtrusts,verbs=get;create
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshtrusts/status,verbs=patch

// FieldOwnerTrust writes the MeshTrust's status.
const FieldOwnerTrust = "weft-trust"

// DefaultTrustWarning is how long before an anchor or the signing CA
// expires that CAExpiring turns True and TrustExpiring Events begin.
const DefaultTrustWarning = 30 * 24 * time.Hour

// TrustReporter keeps the MeshTrust named mesh: the anchors the workloads
// trust, the CA that signs, their expiry and the rotation phase, with the
// conditions Ready and CAExpiring, and a TrustExpiring Event while
// something expires within Window. It runs on the leader, at start, on
// every change of the trust, and every Every.
type TrustReporter struct {
	Client client.Client
	Scheme *runtime.Scheme
	// Source is --ca (builtin, external, cert-manager); Issuer names the
	// issuer with cert-manager.
	Source, Issuer string
	// Bundle returns the anchors (PEM), nil until loaded; Signing the CA
	// weft signs with, nil with cert-manager (or until loaded: Waits
	// says which).
	Bundle  func() []byte
	Signing func() *x509.Certificate
	// Window is DefaultTrustWarning when zero; Every 10 minutes.
	Window, Every time.Duration
	Changed       <-chan struct{}
	Events        events.EventRecorder
	Log           logr.Logger
}

// NeedLeaderElection is true: one writer, one Event.
func (r *TrustReporter) NeedLeaderElection() bool { return true }

// Start reports until ctx ends; a failed report is tried again within a
// minute.
func (r *TrustReporter) Start(ctx context.Context) error {
	every := r.Every
	if every <= 0 {
		every = 10 * time.Minute
	}
	for {
		wait := every
		loaded, err := r.report(ctx, time.Now())
		switch {
		case err != nil:
			r.Log.Error(err, "Writing the mesh's trust state failed; trying again")
			wait = min(every, time.Minute)
		case !loaded:
			wait = min(every, 2*time.Second) // look again soon: it loads at start
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.Changed:
		case <-time.After(wait):
		}
	}
}

func (r *TrustReporter) window() time.Duration {
	if r.Window <= 0 {
		return DefaultTrustWarning
	}
	return r.Window
}

// report writes the state; loaded says the trust was loaded.
func (r *TrustReporter) report(ctx context.Context, now time.Time) (loaded bool, err error) {
	var signing *x509.Certificate
	if r.Signing != nil {
		signing = r.Signing()
	}
	st, conds := DescribeTrust(r.Bundle(), signing, r.Source != "cert-manager", now, r.window())
	st.Source, st.Issuer = r.Source, r.Issuer
	r.record(st)

	loaded = meta.IsStatusConditionTrue(conds, meshv1.ConditionReady)
	mt := &meshv1.MeshTrust{}
	err = r.Client.Get(ctx, client.ObjectKey{Name: meshv1.MeshTrustName}, mt)
	if apierrors.IsNotFound(err) {
		mt = &meshv1.MeshTrust{ObjectMeta: metav1.ObjectMeta{Name: meshv1.MeshTrustName,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "weft"}}}
		err = r.Client.Create(ctx, mt)
	}
	if err != nil {
		return false, fmt.Errorf("reading the MeshTrust %s: %w", meshv1.MeshTrustName, err)
	}
	fields, current := statusFields(st), statusFields(mt.Status)
	cur := *mt.Status.DeepCopy()
	w := status.Writer{Client: r.Client, Scheme: r.Scheme, Owner: FieldOwnerTrust}
	wrote, err := w.Apply(ctx, mt, cur.Conditions, current, status.Update{Conditions: conds,
		OwnedTypes: []string{meshv1.ConditionReady, meshv1.ConditionCAExpiring}, Fields: fields})
	if err != nil {
		return loaded, err
	}
	if wrote {
		r.Log.Info("Wrote the mesh's trust state", "phase", st.Phase, "anchors", st.AnchorCount, "nextExpiry", klog.SafePtr(st.NextExpiry))
		// The status as it was is the last state written, by this leader
		// or an earlier one: a rotation is told once.
		if note := RotationNote(cur, st); note != "" && r.Events != nil {
			r.Events.Eventf(mt, nil, corev1.EventTypeNormal, wire.EventCARotated, "Rotate", "%s", note)
		}
	}
	if c := meta.FindStatusCondition(conds, meshv1.ConditionCAExpiring); c != nil && c.Status == metav1.ConditionTrue && r.Events != nil {
		r.Events.Eventf(mt, nil, corev1.EventTypeWarning, wire.EventTrustExpiring, "Certify", "%s", c.Message)
	}
	return loaded, nil
}

// RotationNote says how the trust changed from was to now (the anchors
// added and removed, a new signing CA), or "" when it did not, or when
// was held none (the first state written).
func RotationNote(was, now meshv1.MeshTrustStatus) string {
	if len(was.Anchors) == 0 || len(now.Anchors) == 0 {
		return ""
	}
	name := func(c meshv1.TrustedCertificate) string {
		return fmt.Sprintf("%q (serial %s, expires %s)", c.Subject, c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339))
	}
	in := func(list []meshv1.TrustedCertificate, c meshv1.TrustedCertificate) bool {
		return slices.ContainsFunc(list, func(o meshv1.TrustedCertificate) bool { return o.SHA256 == c.SHA256 })
	}
	var parts []string
	for _, a := range now.Anchors {
		if !in(was.Anchors, a) {
			parts = append(parts, "trusts "+name(a))
		}
	}
	for _, a := range was.Anchors {
		if !in(now.Anchors, a) {
			parts = append(parts, "no longer trusts "+name(a))
		}
	}
	if s := now.SigningCA; s != nil && (was.SigningCA == nil || was.SigningCA.SHA256 != s.SHA256) {
		parts = append(parts, "signs with "+name(*s))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("The mesh %s; phase %s with %d anchor(s)", strings.Join(parts, "; "), now.Phase, len(now.Anchors))
}

// statusFields are the status fields the reporter owns that are set: one
// left out is removed by the apply, and an unset one is never sent as
// null.
func statusFields(st meshv1.MeshTrustStatus) map[string]any {
	f := map[string]any{}
	set := func(k string, v any, ok bool) {
		if ok {
			f[k] = v
		}
	}
	set("source", st.Source, st.Source != "")
	set("issuer", st.Issuer, st.Issuer != "")
	set("phase", st.Phase, st.Phase != "")
	set("anchors", st.Anchors, len(st.Anchors) > 0)
	set("anchorCount", st.AnchorCount, st.AnchorCount > 0)
	set("signingCA", st.SigningCA, st.SigningCA != nil)
	set("nextExpiry", st.NextExpiry, st.NextExpiry != nil)
	set("warningWindow", st.WarningWindow, st.WarningWindow != nil)
	return f
}

// record sets the expiry gauges to st.
func (r *TrustReporter) record(st meshv1.MeshTrustStatus) {
	metrics.TrustExpiry.Reset()
	for _, a := range st.Anchors {
		metrics.TrustExpiry.WithLabelValues("anchor", a.Subject, a.SerialNumber).Set(float64(a.NotAfter.Unix()))
	}
	if s := st.SigningCA; s != nil {
		metrics.TrustExpiry.WithLabelValues("signing", s.Subject, s.SerialNumber).Set(float64(s.NotAfter.Unix()))
	}
}

// DescribeTrust says what a bundle (PEM) and the signing CA (nil when an
// issuer signs, or while weft's CA is not loaded: needSigning says which)
// amount to at now: the anchors and the CA, the phase of a rotation, the
// soonest expiry, and the conditions Ready and CAExpiring (True while one
// of them expires within window, naming each and when).
func DescribeTrust(bundle []byte, signing *x509.Certificate, needSigning bool, now time.Time, window time.Duration) (meshv1.MeshTrustStatus, []metav1.Condition) {
	st := meshv1.MeshTrustStatus{WarningWindow: &metav1.Duration{Duration: window}}
	anchors, err := identity.ParseCerts(bundle)
	if len(bundle) == 0 || err != nil || (needSigning && signing == nil) {
		why := "the trust bundle is not loaded yet"
		if err == nil && len(bundle) > 0 {
			why = "the signing CA is not loaded yet"
		}
		return st, []metav1.Condition{
			{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1.ReasonWaitingForTrust, Message: why},
		}
	}
	slices.SortStableFunc(anchors, func(a, b *x509.Certificate) int { return a.NotBefore.Compare(b.NotBefore) })
	for _, a := range anchors {
		st.Anchors = append(st.Anchors, trusted(a))
	}
	st.AnchorCount = int32(len(anchors))
	if signing != nil {
		s := trusted(signing)
		st.SigningCA = &s
	}
	st.Phase = meshv1.TrustSteady
	if len(anchors) > 1 {
		st.Phase = meshv1.TrustTrustingBoth
		if signing != nil && chainsTo(signing, anchors[len(anchors)-1]) {
			st.Phase = meshv1.TrustSigningWithNew
		}
	}

	var soonest time.Time
	var expiring []string
	expired := false
	check := func(what string, c *x509.Certificate) {
		if soonest.IsZero() || c.NotAfter.Before(soonest) {
			soonest = c.NotAfter
		}
		left := c.NotAfter.Sub(now)
		switch {
		case left <= 0:
			expired = true
			expiring = append(expiring, fmt.Sprintf("%s %q (serial %x) expired at %s", what, c.Subject.String(), c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339)))
		case left < window:
			expiring = append(expiring, fmt.Sprintf("%s %q (serial %x) expires at %s, in %d days", what, c.Subject.String(), c.SerialNumber,
				c.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24)))
		}
	}
	if signing != nil {
		check("the signing CA", signing)
	}
	for _, a := range anchors {
		if signing == nil || !a.Equal(signing) {
			check("the anchor", a)
		}
	}
	next := metav1.NewTime(soonest)
	st.NextExpiry = &next

	ready := metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonTrustLoaded,
		Message: fmt.Sprintf("%d anchor(s) trusted; phase %s", len(anchors), st.Phase)}
	exp := metav1.Condition{Type: meshv1.ConditionCAExpiring, Status: metav1.ConditionFalse, Reason: meshv1.ReasonNotExpiring,
		Message: fmt.Sprintf("nothing expires within %v; the soonest at %s", window, soonest.UTC().Format(time.RFC3339))}
	if len(expiring) > 0 {
		exp.Status, exp.Reason = metav1.ConditionTrue, meshv1.ReasonExpiresSoon
		if expired {
			exp.Reason = meshv1.ReasonExpired
		}
		exp.Message = strings.Join(expiring, "; ") + "; " + renewAdvice(signing != nil)
	}
	return st, []metav1.Condition{ready, exp}
}

func renewAdvice(weftSigns bool) string {
	if weftSigns {
		return "rotate with weft ca rotate (built-in root), or renew the CA where it is kept"
	}
	return "put the issuer's new root into the trust bundle, have the issuer sign with it, then retire the old"
}

// chainsTo says c is anchor, or verifies to it.
func chainsTo(c, anchor *x509.Certificate) bool {
	if c.Equal(anchor) {
		return true
	}
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: c.NotBefore.Add(time.Second)})
	return err == nil
}

func trusted(c *x509.Certificate) meshv1.TrustedCertificate {
	sum := sha256.Sum256(c.Raw)
	return meshv1.TrustedCertificate{Subject: c.Subject.String(), SerialNumber: hex.EncodeToString(c.SerialNumber.Bytes()),
		SHA256: hex.EncodeToString(sum[:]), NotBefore: metav1.NewTime(c.NotBefore), NotAfter: metav1.NewTime(c.NotAfter)}
}
