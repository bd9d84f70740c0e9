package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// With an external CA, the anchors outlive a restart of the controller in
// one ConfigMap in the mesh namespace (certificates are public; there is
// no key in it): the signing CAs still trusted and until when. Each
// replica reads it when it starts and writes it when the set changes.
const (
	AnchorsConfigMap = "weft-trust-anchors"
	// anchorsKey holds the anchors' certificates, PEM; untilKey, JSON,
	// the moment each replaced one stops being trusted, by fingerprint.
	anchorsKey        = "ca.crt"
	untilKey          = "until.json"
	fieldOwnerAnchors = "weft-trust-anchors"
)

// readAnchors returns the anchors kept in the ConfigMap; none if it is not
// there.
func readAnchors(ctx context.Context, c client.Client, namespace string) ([]Anchor, error) {
	var cm corev1.ConfigMap
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: AnchorsConfigMap}, &cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the trust anchors %s/%s: %w", namespace, AnchorsConfigMap, err)
	}
	certs, err := ParseCerts([]byte(cm.Data[anchorsKey]))
	if err != nil {
		return nil, fmt.Errorf("the trust anchors %s/%s, key %s: %w", namespace, AnchorsConfigMap, anchorsKey, err)
	}
	until := map[string]time.Time{}
	if raw := cm.Data[untilKey]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &until); err != nil {
			return nil, fmt.Errorf("the trust anchors %s/%s, key %s: %w", namespace, AnchorsConfigMap, untilKey, err)
		}
	}
	out := make([]Anchor, 0, len(certs))
	for _, c := range certs {
		out = append(out, Anchor{Cert: c, Until: until[Fingerprint(c)]})
	}
	return out, nil
}

// writeAnchors keeps the anchors in the ConfigMap.
func writeAnchors(ctx context.Context, c client.Client, namespace string, anchors []Anchor) error {
	until := map[string]time.Time{}
	for _, a := range anchors {
		if !a.Until.IsZero() {
			until[Fingerprint(a.Cert)] = a.Until.UTC()
		}
	}
	raw, err := json.Marshal(until)
	if err != nil {
		return err
	}
	cm := applycorev1.ConfigMap(AnchorsConfigMap, namespace).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": "weft"}).
		WithData(map[string]string{anchorsKey: string(AnchorsPEM(anchors)), untilKey: string(raw)})
	if err := c.Apply(ctx, cm, client.FieldOwner(fieldOwnerAnchors), client.ForceOwnership); err != nil {
		return fmt.Errorf("keeping the trust anchors in %s/%s: %w", namespace, AnchorsConfigMap, err)
	}
	return nil
}

// sameAnchors says whether two anchor lists hold the same certificates
// with the same Until.
func sameAnchors(a, b []Anchor) bool {
	return slices.EqualFunc(a, b, func(x, y Anchor) bool { return x.Cert.Equal(y.Cert) && x.Until.Equal(y.Until) })
}
