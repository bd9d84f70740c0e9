package auth

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"
)

// FuzzTokenAndNode: reading a token's expiry never panics, whatever the
// token; a token whose claims hold an exp gives exactly it; and a stream
// may use only its own pod's node id.
func FuzzTokenAndNode(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2ln", []byte(`{"exp":1700000000}`), "reviews-v1", "bookinfo", "reviews-v1.bookinfo")
	f.Add("not-a-jwt", []byte(`{"exp":"soon"}`), "a", "b", "a.c")
	f.Fuzz(func(t *testing.T, token string, claims []byte, pod, namespace, nodeID string) {
		_, _ = tokenExpiry(token)
		built := "e30." + base64.RawURLEncoding.EncodeToString(claims) + ".c2ln"
		var c struct {
			Exp int64 `json:"exp"`
		}
		exp, ok := tokenExpiry(built)
		if json.Unmarshal(claims, &c) == nil && c.Exp != 0 {
			if !ok || !exp.Equal(time.Unix(c.Exp, 0)) {
				t.Fatalf("claims %q: expiry %v, %v; want %v", claims, exp, ok, time.Unix(c.Exp, 0))
			}
		} else if ok {
			t.Fatalf("claims %q without an exp give an expiry %v", claims, exp)
		}
		id := Identity{Namespace: namespace, Pod: pod}
		err := CheckNode(id, nodeID)
		if (err == nil) != (nodeID == id.NodeID()) {
			t.Fatalf("pod %s/%s with node id %q: %v", namespace, pod, nodeID, err)
		}
	})
}
