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

// The proxies' status, and xDS with --xds-auth=none, have no
// authentication: the controller refuses to serve them beyond loopback.
func TestUnauthenticatedListenersStayOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		status, xds, auth, drain string
		ok                       bool
	}{
		{"127.0.0.1:15013", ":15012", "token", "", true},
		{"[::1]:15013", "", "token", "", true},
		{"localhost:0", "", "token", "", true},
		{"", ":15012", "token", "", true},
		{"127.0.0.1:15013", "127.0.0.1:15012", "none", "", true},
		{":15013", "", "token", "", false},
		{"0.0.0.0:15013", "", "token", "", false},
		{"10.1.2.3:15013", "", "token", "", false},
		{"127.0.0.1:15013", ":15012", "none", "", false},
		{"127.0.0.1:15013", "192.0.2.7:15012", "none", "", false},
		{"127.0.0.1:15013", ":15012", "token", ":15014", true},
		{"127.0.0.1:15013", "127.0.0.1:15012", "none", "127.0.0.1:15014", true},
		{"127.0.0.1:15013", "127.0.0.1:15012", "none", ":15014", false},
	} {
		o := &controllerOptions{xdsStatusAddr: tc.status, xdsAddr: tc.xds, xdsAuth: tc.auth, drainAddr: tc.drain}
		if err := o.checkUnauthenticated(); (err == nil) != tc.ok {
			t.Errorf("status %q, xds %q, auth %s, drain %q: %v", tc.status, tc.xds, tc.auth, tc.drain, err)
		}
	}
}
