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

func TestSPIFFEIDForms(t *testing.T) {
	id := SPIFFEID("cluster.local", "shop", "checkout")
	if id != "spiffe://cluster.local/ns/shop/sa/checkout" {
		t.Errorf("SPIFFEID = %q", id)
	}
	for _, prefix := range []string{SPIFFEDomainPrefix("cluster.local"), SPIFFENamespacePrefix("cluster.local", "shop")} {
		if !strings.HasPrefix(id, prefix) {
			t.Errorf("%q does not start with %q", id, prefix)
		}
	}
	if strings.HasPrefix(SPIFFEID("cluster.local", "shopping", "x"), SPIFFENamespacePrefix("cluster.local", "shop")) {
		t.Error("the namespace prefix of shop matches an identity of shopping")
	}
	if strings.HasPrefix(SPIFFEID("cluster.local.evil", "shop", "x"), SPIFFEDomainPrefix("cluster.local")) {
		t.Error("the trust domain prefix of cluster.local matches an identity of cluster.local.evil")
	}
	ns, sa, ok := ParseSPIFFEPath(SPIFFEPath("shop", "checkout"))
	if !ok || ns != "shop" || sa != "checkout" {
		t.Errorf("ParseSPIFFEPath(SPIFFEPath(shop, checkout)) = %q, %q, %v", ns, sa, ok)
	}
	for _, bad := range []string{"", "/", "ns/shop/sa/checkout", "/ns/shop/sa", "/ns//sa/x", "/ns/shop/sa/", "/ns/shop/sa/x/y", "/namespace/shop/sa/x", "/ns/shop/serviceaccount/x"} {
		if _, _, ok := ParseSPIFFEPath(bad); ok {
			t.Errorf("ParseSPIFFEPath(%q) accepted it", bad)
		}
	}
}
