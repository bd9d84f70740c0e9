package main

import (
	"os"
	"path/filepath"
	"testing"
)

// With --kubeconfig the controller's client is not limited on the client
// side, as in the cluster: client-go's default of 5 requests a second
// held status writes back (150 verdicts took 18 s to be written).
func TestKubeconfigIsNotThrottled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := (&controllerOptions{kubeconfig: path}).restConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS >= 0 {
		t.Errorf("QPS %v: the client is limited on the client side", cfg.QPS)
	}
}
