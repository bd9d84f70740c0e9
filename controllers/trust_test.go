package controllers

import (
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
)

// DescribeTrust: the phase of a rotation, the soonest expiry and the
// warning, from the bundle and the signing CA.
func TestDescribeTrust(t *testing.T) {
	now := time.Now()
	old, err := identity.NewRoot("cluster.local", now.Add(-48*time.Hour), 20*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := identity.NewRoot("cluster.local", now, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pem := func(cas ...*identity.CA) []byte {
		var ders [][]byte
		for _, ca := range cas {
			ders = append(ders, ca.Cert.Raw)
		}
		return identity.EncodeCerts(ders)
	}
	for _, tc := range []struct {
		name        string
		bundle      []byte
		signing     *identity.CA
		needSigning bool
		phase       meshv1.TrustPhase
		ready       metav1.ConditionStatus
		expiring    metav1.ConditionStatus
		message     string
	}{
		{name: "one fresh root", bundle: pem(fresh), signing: fresh, needSigning: true, phase: meshv1.TrustSteady,
			ready: metav1.ConditionTrue, expiring: metav1.ConditionFalse, message: "nothing expires within"},
		{name: "one root within the window", bundle: pem(old), signing: old, needSigning: true, phase: meshv1.TrustSteady,
			ready: metav1.ConditionTrue, expiring: metav1.ConditionTrue, message: "the signing CA \"CN=weft root cluster.local,O=weft\""},
		{name: "rotated: both trusted, the new signs", bundle: pem(old, fresh), signing: fresh, needSigning: true, phase: meshv1.TrustSigningWithNew,
			ready: metav1.ConditionTrue, expiring: metav1.ConditionTrue, message: "the anchor"},
		{name: "the new trusted before it signs", bundle: pem(fresh, old), signing: old, needSigning: true, phase: meshv1.TrustTrustingBoth,
			ready: metav1.ConditionTrue, expiring: metav1.ConditionTrue},
		{name: "an issuer signs", bundle: pem(fresh), needSigning: false, phase: meshv1.TrustSteady,
			ready: metav1.ConditionTrue, expiring: metav1.ConditionFalse},
		{name: "an issuer's two roots", bundle: pem(old, fresh), needSigning: false, phase: meshv1.TrustTrustingBoth,
			ready: metav1.ConditionTrue, expiring: metav1.ConditionTrue, message: "put the issuer's new root into the trust bundle"},
		{name: "nothing loaded", needSigning: true, ready: metav1.ConditionFalse, message: "not loaded"},
		{name: "the CA not loaded", bundle: pem(fresh), needSigning: true, ready: metav1.ConditionFalse, message: "signing CA is not loaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var signing *x509.Certificate
			if tc.signing != nil {
				signing = tc.signing.Cert
			}
			st, conds := DescribeTrust(tc.bundle, signing, tc.needSigning, now, DefaultTrustWarning)
			if st.Phase != tc.phase {
				t.Errorf("phase %q, want %q", st.Phase, tc.phase)
			}
			ready := meta.FindStatusCondition(conds, meshv1.ConditionReady)
			if ready == nil || ready.Status != tc.ready {
				t.Fatalf("Ready %+v, want %s", ready, tc.ready)
			}
			exp := meta.FindStatusCondition(conds, meshv1.ConditionCAExpiring)
			switch {
			case tc.ready != metav1.ConditionTrue:
				if exp != nil {
					t.Errorf("CAExpiring %+v while nothing is loaded", exp)
				}
				if !strings.Contains(ready.Message, tc.message) {
					t.Errorf("Ready says %q, want %q", ready.Message, tc.message)
				}
				return
			case exp == nil || exp.Status != tc.expiring:
				t.Fatalf("CAExpiring %+v, want %s", exp, tc.expiring)
			case !strings.Contains(exp.Message, tc.message):
				t.Errorf("CAExpiring says %q, want %q in it", exp.Message, tc.message)
			}
			if int(st.AnchorCount) != len(st.Anchors) || st.NextExpiry == nil {
				t.Errorf("anchors %d/%d, next expiry %v", st.AnchorCount, len(st.Anchors), st.NextExpiry)
			}
			if !st.NextExpiry.Time.Equal(old.Cert.NotAfter) && tc.expiring == metav1.ConditionTrue {
				t.Errorf("the next expiry is %v, want the old root's %v", st.NextExpiry, old.Cert.NotAfter)
			}
		})
	}
	// Expired: the reason says so.
	_, conds := DescribeTrust(pem(old), old.Cert, true, old.Cert.NotAfter.Add(time.Hour), DefaultTrustWarning)
	if c := meta.FindStatusCondition(conds, meshv1.ConditionCAExpiring); c == nil || c.Reason != meshv1.ReasonExpired {
		t.Errorf("an expired root: %+v", c)
	}
}

// RotationNote names what a rotation changed: the anchor added and the new
// signing CA, then the anchor retired; nothing on the first state or when
// nothing changed.
func TestRotationNote(t *testing.T) {
	now := time.Now()
	old, err := identity.NewRoot("cluster.local", now.Add(-48*time.Hour), 20*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := identity.NewRoot("cluster.local", now, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	state := func(signing *identity.CA, anchors ...*identity.CA) meshv1.MeshTrustStatus {
		var ders [][]byte
		for _, a := range anchors {
			ders = append(ders, a.Cert.Raw)
		}
		st, _ := DescribeTrust(identity.EncodeCerts(ders), signing.Cert, true, now, DefaultTrustWarning)
		return st
	}
	steady, rotated, retired := state(old, old), state(fresh, old, fresh), state(fresh, fresh)
	serial := func(ca *identity.CA) string { return "serial " + hex.EncodeToString(ca.Cert.SerialNumber.Bytes()) }
	for _, tc := range []struct {
		name      string
		was, now  meshv1.MeshTrustStatus
		want, not []string
	}{
		{"the first state", meshv1.MeshTrustStatus{}, steady, nil, nil},
		{"nothing changed", rotated, rotated, nil, nil},
		{"rotate", steady, rotated, []string{"trusts \"CN=weft root", serial(fresh), "signs with", "phase SigningWithNew with 2 anchor(s)"}, []string{"no longer"}},
		{"retire", rotated, retired, []string{"no longer trusts", serial(old), "phase Steady with 1 anchor(s)"}, []string{"signs with"}},
	} {
		got := RotationNote(tc.was, tc.now)
		if (got == "") != (tc.want == nil) {
			t.Errorf("%s: %q", tc.name, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", tc.name, got, w)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(got, w) {
				t.Errorf("%s: %q says %q", tc.name, got, w)
			}
		}
	}
}
