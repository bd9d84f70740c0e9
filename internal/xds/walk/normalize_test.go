package walk_test

import (
	"strings"
	"testing"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/walk"
)

// Attempts to reach a path that no rule allows (/admin) through a rule
// that allows productpage GET on the prefix /reviews, walked through the
// sidecar's inbound configuration: its connection manager normalizes the
// path before the allow rules judge it and hands the application the path
// they judged, so a request is let in only when the application receives
// a path under /reviews. want is "400" (the connection manager refuses
// the path), "403" (the rules refuse it) or the path the application
// receives.
func TestWalkInboundPathBypasses(t *testing.T) {
	w := sidecarOf(t, strictRules(meshv1.ProtocolHTTP, productpageGETReviews))
	productpage := walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", "bookinfo", "productpage")}
	for _, c := range []struct {
		name, method, path, want string
	}{
		{"the protected path", "GET", "/admin", "403"},
		{"an allowed path", "GET", "/reviews/1", "/reviews/1"},
		{"dot-dot out of the prefix", "GET", "/reviews/../admin", "403"},
		{"dot then dot-dot", "GET", "/reviews/./../admin", "403"},
		{"dot-dot twice", "GET", "/reviews/1/../../admin", "403"},
		{"dot-dot above the root", "GET", "/reviews/../../admin", "403"},
		{"encoded dots", "GET", "/reviews/%2e%2e/admin", "403"},
		{"encoded dots, upper case", "GET", "/reviews/%2E%2E/admin", "403"},
		{"one dot encoded", "GET", "/reviews/.%2e/admin", "403"},
		{"encoded slash", "GET", "/reviews/..%2fadmin", "400"},
		{"encoded slash, upper case", "GET", "/reviews/..%2Fadmin", "400"},
		{"encoded slashes around the prefix", "GET", "/reviews%2f..%2fadmin", "400"},
		{"encoded backslash", "GET", "/reviews/..%5cadmin", "400"},
		{"backslashes", "GET", `/reviews\..\admin`, "403"},
		{"a backslash before the target", "GET", `/reviews/..\admin`, "403"},
		{"doubled leading slash", "GET", "//reviews/../admin", "403"},
		{"a doubled slash before dot-dot", "GET", "/reviews//../admin", "/reviews/admin"},
		{"doubled slashes inside the prefix", "GET", "/reviews//1", "/reviews/1"},
		{"upper-case prefix", "GET", "/REVIEWS/1", "403"},
		{"a segment parameter before dot-dot", "GET", "/reviews;x/../admin", "403"},
		{"the prefix in the query", "GET", "/admin?next=/reviews", "403"},
		{"dot-dot in the query", "GET", "/reviews/1?next=../../admin", "/reviews/1?next=../../admin"},
		{"an encoded letter", "GET", "/%72eviews/1", "/reviews/1"},
		{"into the prefix from outside", "GET", "/admin/../reviews/1", "/reviews/1"},
		{"double encoding passes as it is", "GET", "/reviews/%252e%252e/admin", "/reviews/%252e%252e/admin"},
		{"a dot-dot-semicolon segment passes as it is", "GET", "/reviews/..;/admin", "/reviews/..;/admin"},
		{"a method in lower case", "get", "/reviews/1", "403"},
		{"another method", "POST", "/reviews/1", "403"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := w.SidecarInbound(9080, productpage, walk.Request{Method: c.method, Path: c.path, Authority: "reviews"})
			if err != nil {
				t.Fatal(err)
			}
			got := res.Path
			switch {
			case strings.Contains(res.Refused, "400"):
				got = "400"
			case !res.Allowed:
				got = "403"
			}
			if got != c.want {
				t.Errorf("%s %s: %s (%s), want %s", c.method, c.path, got, res.Refused, c.want)
			}
			if res.Allowed && !strings.HasPrefix(res.Path, "/reviews") {
				t.Errorf("%s %s let in and handed to the application as %s, outside the rule's prefix", c.method, c.path, res.Path)
			}
		})
	}
}
