package testenv

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// BoundToken says what a ServiceAccount token bound to a pod claims.
type BoundToken struct {
	Namespace, ServiceAccount, ServiceAccountUID string
	Pod, PodUID                                  string
	Audience                                     string
	// Expires is when the token expires; it was issued an hour before.
	Expires time.Time
}

// MintToken signs a token bound to a pod with the API server's own key,
// as the API server's TokenRequest API makes them, for times it would not
// make one at (one that expired, for instance).
func (e *Env) MintToken(b BoundToken) (string, error) {
	issuer, keyPEM, err := e.ServiceAccountIssuer()
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return "", errors.New("the API server's signing key is not PEM")
	}
	var key *ecdsa.PrivateKey
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		key, _ = k.(*ecdsa.PrivateKey)
	}
	if key == nil {
		return "", errors.New("the API server's signing key is not ECDSA")
	}
	iat := b.Expires.Add(-time.Hour)
	claims, err := json.Marshal(map[string]any{
		"iss": issuer, "aud": []string{b.Audience}, "sub": "system:serviceaccount:" + b.Namespace + ":" + b.ServiceAccount,
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": b.Expires.Unix(),
		"kubernetes.io": map[string]any{"namespace": b.Namespace,
			"pod":            map[string]string{"name": b.Pod, "uid": b.PodUID},
			"serviceaccount": map[string]string{"name": b.ServiceAccount, "uid": b.ServiceAccountUID}},
	})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", fmt.Errorf("signing the token: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig), nil
}
