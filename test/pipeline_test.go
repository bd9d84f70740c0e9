package test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/weftmesh/weft/"

// stages are the data plane's stages in the order docs/architecture.md
// gives ("The pipeline"): a stage may import only those before it.
var stages = [][]string{
	{"internal/mesh"},
	{"internal/watch"},
	{"internal/xds/translate"},
	{"internal/xds/cache"},
	{"internal/xds/acks"},
	{"internal/xds/auth", "internal/xds/sds", "internal/xds/server"},
	{"controllers"},
}

// The stages import each other only in the documented order: each stage's
// transitive imports (go list -deps) hold no stage of its own rank or
// later, so that data flows one way and each stage can be built and
// tested without those after it.
func TestStagesImportInOrder(t *testing.T) {
	rank := map[string]int{}
	for i, group := range stages {
		for _, p := range group {
			rank[p] = i
		}
	}
	for p, r := range rank {
		out, err := exec.Command("go", "list", "-deps", module+p).Output()
		if err != nil {
			t.Fatalf("go list -deps %s%s: %v", module, p, err)
		}
		for dep := range strings.FieldsSeq(string(out)) {
			d, ok := strings.CutPrefix(dep, module)
			if !ok || d == p {
				continue
			}
			if dr, stage := rank[d]; stage && dr >= r && !(dr == r && sameGroupAllowed(p, d)) {
				t.Errorf("%s imports %s: stage %d may import only stages before it (docs/architecture.md, The pipeline)", p, d, r+1)
			}
		}
	}
}

// sameGroupAllowed: within the server stage, the server uses the
// authenticator and the SDS issuer (one stage, three packages).
func sameGroupAllowed(p, d string) bool {
	return p == "internal/xds/server" && (d == "internal/xds/auth" || d == "internal/xds/sds")
}
