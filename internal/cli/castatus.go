package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/wire"
)

// CAStatus prints the mesh's trust as the controller reports it in the
// MeshTrust mesh: the source, the rotation phase, the signing CA and the
// anchors with their expiry, and the conditions. With namespace, it also
// checks that the bundle that namespace's workloads mount (the ConfigMap
// weft-root-ca) holds exactly those anchors. It fails when something
// expires within the warning window (CAExpiring=True), when the trust is
// not loaded, or when the namespace's bundle differs.
func CAStatus(ctx context.Context, c client.Reader, namespace string, now time.Time, out io.Writer) error {
	var mt meshv1.MeshTrust
	if err := c.Get(ctx, client.ObjectKey{Name: meshv1.MeshTrustName}, &mt); err != nil {
		return fmt.Errorf("reading the MeshTrust %s (is the controller running?): %w", meshv1.MeshTrustName, err)
	}
	st := mt.Status
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Source:\t%s\n", st.Source)
	if st.Issuer != "" {
		fmt.Fprintf(w, "Issuer:\t%s\n", st.Issuer)
	}
	fmt.Fprintf(w, "Phase:\t%s\n", st.Phase)
	if next := nextRotationStep(st); next != "" {
		fmt.Fprintf(w, "Next:\t%s\n", next)
	}
	if st.SigningCA != nil {
		fmt.Fprintf(w, "Signing CA:\t%s\n", describeCert(*st.SigningCA, now))
	} else if st.Source == "cert-manager" {
		fmt.Fprintf(w, "Signing CA:\tnone held by weft: the issuer signs\n")
	}
	fmt.Fprintf(w, "Anchors:\t%d\n", len(st.Anchors))
	for _, a := range st.Anchors {
		fmt.Fprintf(w, "\t%s\n", describeCert(a, now))
	}
	for _, t := range []string{meshv1.ConditionReady, meshv1.ConditionCAExpiring} {
		if cond := meta.FindStatusCondition(st.Conditions, t); cond != nil {
			fmt.Fprintf(w, "%s:\t%s (%s) %s\n", t, cond.Status, cond.Reason, cond.Message)
		}
	}
	var problems []string
	if namespace != "" {
		same, err := mounts(ctx, c, namespace, st.Anchors)
		switch {
		case err != nil:
			problems = append(problems, err.Error())
		case same:
			fmt.Fprintf(w, "Namespace %s:\tmounts these anchors (ConfigMap %s)\n", namespace, wire.BundleConfigMap)
		default:
			problems = append(problems, fmt.Sprintf("namespace %s mounts a bundle (ConfigMap %s) that is not these anchors: the controller has not published them there yet, or the namespace is not meshed", namespace, wire.BundleConfigMap))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if c := meta.FindStatusCondition(st.Conditions, meshv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		problems = append(problems, "the controller has not loaded the mesh's trust yet")
	}
	if c := meta.FindStatusCondition(st.Conditions, meshv1.ConditionCAExpiring); c != nil && c.Status == metav1.ConditionTrue {
		problems = append(problems, "CAExpiring: "+c.Message)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

func describeCert(c meshv1.TrustedCertificate, now time.Time) string {
	left := c.NotAfter.Sub(now)
	when := fmt.Sprintf("%d days left", int(left.Hours()/24))
	if left <= 0 {
		when = "EXPIRED"
	}
	fp := c.SHA256
	if len(fp) > 16 {
		fp = fp[:16] + "…"
	}
	return fmt.Sprintf("%s  serial %s  sha256 %s  until %s (%s)", c.Subject, c.SerialNumber, fp, c.NotAfter.UTC().Format(time.RFC3339), when)
}

// mounts says whether namespace's bundle ConfigMap holds exactly anchors.
func mounts(ctx context.Context, c client.Reader, namespace string, anchors []meshv1.TrustedCertificate) (bool, error) {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: wire.BundleConfigMap}, &cm); err != nil {
		return false, fmt.Errorf("reading the bundle of namespace %s: %w", namespace, err)
	}
	certs, err := identity.ParseCerts([]byte(cm.Data[wire.BundleKey]))
	if err != nil {
		return false, fmt.Errorf("the bundle of namespace %s: %w", namespace, err)
	}
	var mounted, want []string
	for _, crt := range certs {
		sum := sha256.Sum256(crt.Raw)
		mounted = append(mounted, hex.EncodeToString(sum[:]))
	}
	for _, a := range anchors {
		want = append(want, a.SHA256)
	}
	slices.Sort(mounted)
	slices.Sort(want)
	return slices.Equal(mounted, want), nil
}

// nextRotationStep says what a rotation of the built-in root waits for.
func nextRotationStep(st meshv1.MeshTrustStatus) string {
	if st.Source != "builtin" {
		return ""
	}
	switch st.Phase {
	case meshv1.TrustTrustingBoth:
		return "once every meshed namespace mounts these anchors (--namespace checks one), weft ca promote"
	case meshv1.TrustSigningWithNew:
		return "once every certificate of the old roots was renewed (weft status shows each proxy's), weft ca retire"
	}
	return ""
}
