package wire

import (
	"go/build"
	"strings"
	"testing"
)

func TestNodeIDRoundTrip(t *testing.T) {
	for _, tc := range []struct{ pod, namespace string }{
		{"reviews-v1-7d9f", "bookinfo"},
		{"a.b.c", "shop"}, // pod names may hold dots; namespaces may not
		{"x", "y"},
	} {
		id := NodeID(tc.pod, tc.namespace)
		pod, ns, ok := ParseNodeID(id)
		if !ok || pod != tc.pod || ns != tc.namespace {
			t.Errorf("ParseNodeID(%q) = %q, %q, %v; want %q, %q", id, pod, ns, ok, tc.pod, tc.namespace)
		}
	}
	for _, bad := range []string{"", "nodots", ".shop", "pod.", "."} {
		if pod, ns, ok := ParseNodeID(bad); ok {
			t.Errorf("ParseNodeID(%q) = %q, %q, true; want not ok", bad, pod, ns)
		}
	}
}

func TestServerListenerName(t *testing.T) {
	if got := ServerListenerName("10.0.0.7:8080"); got != "grpc/server?xds.resource.listening_address=10.0.0.7:8080" {
		t.Errorf("ServerListenerName = %q", got)
	}
}

// TestImportsOnlyTheStandardLibrary keeps the package importable from every
// other package of weft.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	p, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range p.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("package wire imports %s; it may import the standard library only", imp)
		}
	}
}
