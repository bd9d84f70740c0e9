package test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/testenv"
)

// Every fuzz target in the tree is run by make fuzz (hack/fuzz.sh), and
// every target listed there exists.
func TestEveryFuzzTargetIsRun(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "hack", "fuzz.sh"))
	if err != nil {
		t.Fatal(err)
	}
	listed := regexp.MustCompile(`(?m)^\s+([a-z/]+):(Fuzz\w+)$`).FindAllStringSubmatch(string(script), -1)
	var want, got []string
	for _, m := range listed {
		want = append(want, m[1]+":"+m[2])
	}
	target := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(f \*testing\.F\)`)
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bin" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range target.FindAllStringSubmatch(string(src), -1) {
			got = append(got, filepath.ToSlash(rel)+":"+m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(got) == 0 || !slices.Equal(want, got) {
		t.Errorf("fuzz targets in the tree:\n  %v\nlisted in hack/fuzz.sh:\n  %v", got, want)
	}
}
