package testenv

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

const (
	netnsEnv     = "WEFT_TEST_IN_NETNS"
	advertiseEnv = "WEFT_TEST_APISERVER_ADVERTISE_ADDRESS"
	// apiserverAddr is what the API server advertises inside the namespace.
	apiserverAddr = "192.0.2.1"
)

// InOwnNetworkNamespace runs the calling test again in a child process with
// a network namespace of its own, whose loopback interface is up and also
// carries addrs (for example documentation-range addresses that the API
// server accepts in EndpointSlices, unlike 127.0.0.0/8; 192.0.2.1 is taken
// for the API server to advertise). It returns true in
// the child, which runs the test's body; in the parent it waits for the
// child, copies its output and returns false. Nothing the test sends
// leaves the namespace.
func InOwnNetworkNamespace(t *testing.T, addrs ...string) bool {
	t.Helper()
	return InOwnNetworkNamespaceWith(t, nil, addrs...)
}

// InOwnNetworkNamespaceWith is InOwnNetworkNamespace with env (NAME=value
// entries) added to the environment of the test's new process, for what a
// library reads once when the process starts (grpc-go's feature
// switches); unlike t.Setenv, it lets the test run in parallel.
func InOwnNetworkNamespaceWith(t *testing.T, env []string, addrs ...string) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			t.Fatal(err)
		}
		for _, a := range append([]string{apiserverAddr}, addrs...) {
			addr, err := netlink.ParseAddr(a + "/32")
			if err != nil {
				t.Fatal(err)
			}
			if err := netlink.AddrAdd(lo, addr); err != nil {
				t.Fatalf("adding %s to the namespace's loopback: %v", a, err)
			}
		}
		if err := os.Setenv(advertiseEnv, apiserverAddr); err != nil {
			t.Fatal(err)
		}
		return true
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root, to run in a network namespace of its own")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), env...), netnsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("in its own network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("the test failed in its network namespace: %v", err)
	}
	return false
}
