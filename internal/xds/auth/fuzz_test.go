package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/weftmesh/weft/internal/wire"
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

// reviewerOf answers one token with the status a fuzz input makes, and
// refuses every other.
type reviewerOf struct {
	token string
	st    authenticationv1.TokenReviewStatus
}

func (r reviewerOf) Review(_ context.Context, token string, _ []string) (authenticationv1.TokenReviewStatus, error) {
	if token != r.token {
		return authenticationv1.TokenReviewStatus{Error: "unknown token"}, nil
	}
	return r.st, nil
}

// stream is a server stream with only a context.
type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stream) Context() context.Context { return s.ctx }

// FuzzStreamAuthentication: through the stream interceptor, whatever the
// authorization headers and whatever the API server's review says, a
// stream reaches the xDS handler only with a token the API server
// accepted for audience weft and bound to a pod of a ServiceAccount, and
// then as exactly that pod; every other stream ends Unauthenticated
// before the handler; and the stream may use only that pod's node id.
func FuzzStreamAuthentication(f *testing.F) {
	f.Add("Bearer good", "", true, "system:serviceaccount:shop:reviews", "reviews-v1", "weft", "reviews-v1.shop")
	f.Add("Bearer good", "Bearer other", true, "system:serviceaccount:shop:reviews", "", "weft", "reviews-v1.shop")
	f.Add("bearer good", "", true, "system:serviceaccount:shop:reviews", "reviews-v1", "", "reviews-v1.shop")
	f.Add("Bearer good", "", true, "system:node:node-1", "reviews-v1", "weft", "x.y")
	f.Add("Bearer  good ", "", false, "system:serviceaccount:shop:reviews", "reviews-v1", "other", "reviews-v1.other")
	f.Fuzz(func(t *testing.T, auth1, auth2 string, authenticated bool, username, podName, audience, nodeID string) {
		st := authenticationv1.TokenReviewStatus{Authenticated: authenticated, User: authenticationv1.UserInfo{Username: username,
			Extra: map[string]authenticationv1.ExtraValue{"authentication.kubernetes.io/pod-name": {podName}}}}
		if audience != "" {
			st.Audiences = []string{audience}
		}
		a := &Authenticator{Reviewer: reviewerOf{token: "good", st: st}, Now: func() time.Time { return time.Unix(1_800_000_000, 0) }}
		md := metadata.MD{}
		for _, v := range []string{auth1, auth2} {
			if v != "" {
				md.Append("authorization", v)
			}
		}
		var got *Identity
		err := a.StreamInterceptor()(nil, stream{ctx: metadata.NewIncomingContext(context.Background(), md)}, &grpc.StreamServerInfo{},
			func(_ any, ss grpc.ServerStream) error {
				id, ok := FromContext(ss.Context())
				if !ok {
					t.Fatal("the handler ran without an identity")
				}
				got = &id
				return nil
			})
		// What the interceptor may accept: the first bearer token is the
		// good one, and the review holds.
		token := ""
		for _, v := range md.Get("authorization") {
			if rest, ok := strings.CutPrefix(v, wire.BearerPrefix); ok {
				token = strings.TrimSpace(rest)
				break
			}
		}
		parts := strings.Split(username, ":")
		valid := token == "good" && authenticated && (audience == "" || audience == wire.TokenAudience) &&
			len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" && podName != ""
		if !valid {
			if got != nil || err == nil || status.Code(err) != codes.Unauthenticated {
				t.Fatalf("headers %q, %q and review %+v: handler ran %v, error %v; want Unauthenticated before the handler", auth1, auth2, st, got != nil, err)
			}
			return
		}
		want := Identity{Namespace: parts[2], ServiceAccount: parts[3], Pod: podName}
		if err != nil || got == nil || *got != want {
			t.Fatalf("headers %q, %q and review %+v: %v, %+v; want %+v", auth1, auth2, st, err, got, want)
		}
		bound, err := a.BindNode(context.Background(), *got, nodeID)
		if (err == nil) != (nodeID == want.NodeID()) || (err == nil && bound != want) {
			t.Fatalf("%+v with node id %q: %+v, %v", want, nodeID, bound, err)
		}
	})
}
