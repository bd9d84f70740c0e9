package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// children lists this process's live child processes by their binary.
func children(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := strconv.Itoa(os.Getpid())
	var out []string
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[0] != "Z" && fields[1] == me {
			exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
			out = append(out, exe)
		}
	}
	return out
}

// A CRD the API server refuses makes Start fail after etcd and
// kube-apiserver are up; they must not outlive the failure.
func TestStartStopsWhatItStartedOnFailure(t *testing.T) {
	dir := t.TempDir()
	crd := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: brokens.example.weft.dev
spec:
  group: example.weft.dev
  names: {kind: Broken, plural: brokens}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              x: {type: string}
            x-kubernetes-validations:
            - rule: "self.x == )"
              message: broken
`
	if err := os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte(crd), 0o600); err != nil {
		t.Fatal(err)
	}
	env, err := StartWithCRDs(dir)
	if err == nil {
		_ = env.Stop()
		t.Fatal("the API server accepted a CRD with a rule that does not compile")
	}
	if !strings.Contains(err.Error(), "brokens.example.weft.dev") {
		t.Errorf("the error does not name the CRD: %v", err)
	}
	if left := children(t); len(left) > 0 {
		t.Errorf("processes left running after a failed start: %v", left)
	}
}

// A good start and stop leaves nothing running either.
func TestStartAndStop(t *testing.T) {
	env, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	if len(children(t)) < 2 {
		t.Errorf("expected etcd and kube-apiserver as children, found %v", children(t))
	}
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	if left := children(t); len(left) > 0 {
		t.Errorf("processes left running after Stop: %v", left)
	}
}
