package wire

import "testing"

// FuzzNodeID: a pod's node id parses back to the pod and its namespace
// (namespaces are DNS labels: no dot), and parsing any string never
// panics and, when it succeeds, gives back the id.
func FuzzNodeID(f *testing.F) {
	f.Add("reviews-v1-7d9f", "bookinfo", "reviews-v1-7d9f.bookinfo")
	f.Add("a.b", "c", ".")
	f.Fuzz(func(t *testing.T, pod, namespace, id string) {
		if pod != "" && namespace != "" && !containsDot(namespace) {
			p, ns, ok := ParseNodeID(NodeID(pod, namespace))
			if !ok || p != pod || ns != namespace {
				t.Fatalf("NodeID(%q, %q) parses as %q, %q, %v", pod, namespace, p, ns, ok)
			}
		}
		if p, ns, ok := ParseNodeID(id); ok && NodeID(p, ns) != id {
			t.Fatalf("%q parses as %q, %q, which make %q", id, p, ns, NodeID(p, ns))
		}
	})
}

func containsDot(s string) bool {
	for i := range len(s) {
		if s[i] == '.' {
			return true
		}
	}
	return false
}
