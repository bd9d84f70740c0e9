// Package golden compares test output with files under testdata/, and
// rewrites them when the tests run with -update. Case directories (Dir)
// hold their inputs beside their outputs; -update also deletes the outputs
// a case no longer produces.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ and delete stale ones")

// Updating says whether the tests run with -update.
func Updating() bool { return *update }

// Check compares got with testdata/<name>, or writes it there with -update.
func Check(t testing.TB, name string, got []byte) {
	t.Helper()
	check(t, filepath.Join("testdata", name), got)
}

func check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update if the change is intended):\n%s", path, got)
	}
}

// Dir compares a case directory's outputs (file name → content) with the
// files in dir, whose inputs are named in inputs. A file that is neither
// an input nor an output is stale: an error, or deleted with -update.
func Dir(t testing.TB, dir string, outputs map[string][]byte, inputs ...string) {
	t.Helper()
	for name, got := range outputs {
		check(t, filepath.Join(dir, name), got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if _, out := outputs[name]; out || slices.Contains(inputs, name) {
			continue
		}
		path := filepath.Join(dir, name)
		if !*update {
			t.Errorf("%s is no output of its case (run with -update to delete it)", path)
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			t.Fatal(err)
		}
	}
}
