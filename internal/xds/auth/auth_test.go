package auth

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/weftmesh/weft/internal/wire"
)

// scripted answers reviews as told and counts them (a unit test of the
// cache's logic; the API server's own answers are tested in
// internal/xds/server).
type scripted struct {
	answer authenticationv1.TokenReviewStatus
	n      int
}

func (s *scripted) Review(context.Context, string, []string) (authenticationv1.TokenReviewStatus, error) {
	s.n++
	return s.answer, nil
}

func jwt(exp time.Time) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"exp":%d}`, exp.Unix())))
	return "e30." + payload + ".sig"
}

var podToken = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{wire.TokenAudience},
	User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:client", Extra: map[string]authenticationv1.ExtraValue{
		"authentication.kubernetes.io/pod-name": {"a"}, "authentication.kubernetes.io/pod-uid": {"uid-a"}}}}

// A review is remembered until the token expires, and no longer.
func TestReviewRememberedUntilTheTokenExpires(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	r := &scripted{answer: podToken}
	a := &Authenticator{Reviewer: r, Now: func() time.Time { return now }}
	tok := jwt(now.Add(90 * time.Second))
	for range 3 {
		id, err := a.Authenticate(context.Background(), tok)
		if err != nil || id.NodeID() != "a.shop" || id.PodUID != "uid-a" || id.ServiceAccount != "client" {
			t.Fatalf("got %+v, %v", id, err)
		}
	}
	if r.n != 1 {
		t.Fatalf("%d reviews for three connects", r.n)
	}
	now = now.Add(91 * time.Second)
	if _, err := a.Authenticate(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if r.n != 2 {
		t.Fatalf("an expired token's review was reused (%d reviews)", r.n)
	}
}

// Tokens that are not a pod's are refused with Unauthenticated, and say
// why.
func TestTokensThatAreNotAPods(t *testing.T) {
	for name, st := range map[string]authenticationv1.TokenReviewStatus{
		"refused":           {Authenticated: false, Error: "token expired"},
		"another audience":  {Authenticated: true, Audiences: []string{"other"}, User: podToken.User},
		"a user":            {Authenticated: true, User: authenticationv1.UserInfo{Username: "alice"}},
		"not bound to pods": {Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:client"}},
	} {
		a := &Authenticator{Reviewer: &scripted{answer: st}}
		if _, err := a.Authenticate(context.Background(), jwt(time.Now().Add(time.Hour))); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := CheckNode(Identity{Namespace: "shop", Pod: "a"}, "b.shop"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("another pod's node id: %v", err)
	}
}
