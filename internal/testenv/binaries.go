package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// BinariesEnv names the directory holding the binaries the tests run
// (weft, demo). 'make test' builds them there before 'go test' starts
// (make test-binaries), so that no test spends its deadline compiling.
const BinariesEnv = "WEFT_TEST_BINARIES"

// binaryPackage returns the package a binary Binary knows is built from.
func binaryPackage(name string) (string, bool) {
	switch name {
	case "weft":
		return ".", true
	case "demo":
		return "./hack/demo", true
	}
	return "", false
}

// Binary returns the path of one of the module's binaries ("weft" or
// "demo") built from the working tree.
//
// With $WEFT_TEST_BINARIES set (make test), it returns the binary built
// there and builds nothing: a missing one fails the test. Otherwise (go test
// run by hand) it builds the binary into bin/test under the root, holding a
// lock so that packages tested side by side build it once; 'go build'
// itself does nothing when the binary is already up to date. It is built
// with the flags 'go test' compiles with (no -trimpath), so the packages
// compiled for the tests are reused.
func Binary(t testing.TB, name string) string {
	t.Helper()
	pkg, ok := binaryPackage(name)
	if !ok {
		t.Fatalf("testenv.Binary: no binary %q", name)
	}
	if dir := os.Getenv(BinariesEnv); dir != "" {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s is missing from $%s=%s: run 'make test-binaries' (make test does)", name, BinariesEnv, dir)
		}
		return path
	}
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	path, err := buildLocked(root, filepath.Join(root, "bin", "test"), name, pkg)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// buildLocked builds pkg into dir/name under an exclusive lock on
// dir/.lock, shared by every test process of the tree.
func buildLocked(root, dir, name, pkg string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	path := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", path, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -o %s %s: %w\n%s", path, pkg, err, out)
	}
	return path, nil
}
