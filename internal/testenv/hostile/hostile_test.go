package hostile

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func generator(t *testing.T, seed uint64) *Generator {
	t.Helper()
	g, err := New(filepath.Join("..", "..", "..", "config", "crd", "bases"), seed)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// The same seed makes the same cases; each names a field of spec, and the
// field a structural case breaks is in the object (or, for a removed or
// map entry, its parent is).
func TestCasesAreReproducible(t *testing.T) {
	a, b := generator(t, 42), generator(t, 42)
	for _, kind := range a.Kinds() {
		ca, cb := a.Cases(kind, "ns", 300), b.Cases(kind, "ns", 300)
		if !reflect.DeepEqual(ca, cb) {
			t.Fatalf("%s: one seed, two sets of cases", kind)
		}
		ja, jb := a.Judged(kind, "ns", 20), b.Judged(kind, "ns", 20)
		if !reflect.DeepEqual(ja, jb) || len(ja) != 20 {
			t.Fatalf("%s: judged cases differ or are missing (%d)", kind, len(ja))
		}
		for _, c := range append(ca, ja...) {
			if !strings.HasPrefix(c.Field, "spec") || c.What == "" {
				t.Errorf("%s: a case without a field of spec: %+v", kind, c.What)
			}
			if _, err := json.Marshal(c.Object); err != nil {
				t.Errorf("%s %s: not JSON: %v", kind, c.What, err)
			}
		}
	}
	if reflect.DeepEqual(generator(t, 1).Cases("TrafficPolicy", "ns", 50), generator(t, 2).Cases("TrafficPolicy", "ns", 50)) {
		t.Error("two seeds, one set of cases")
	}
}

// Every oversized case holds what it says: a string of 1 MiB, a list of
// 10,000 items or a map of 10,000 entries.
func TestOversizedAreOversized(t *testing.T) {
	g := generator(t, 1)
	for _, kind := range g.Kinds() {
		for _, c := range g.Oversized(kind, "ns") {
			b, err := json.Marshal(c.Object)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < HugeString && strings.Count(string(b), ",") < HugeList {
				t.Errorf("%s %s: only %d bytes", kind, c.What, len(b))
			}
			if len(b) > 3<<20 {
				t.Errorf("%s %s: %d bytes, past the API server's limit on a request", kind, c.What, len(b))
			}
		}
	}
}
