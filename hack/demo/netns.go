package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// The demo runs its control plane and workloads in a network namespace of
// its own, because EndpointSlices refuse loopback addresses: there, the
// loopback interface also carries documentation-range addresses
// (192.0.2.0/24), one per pod, which nothing outside the namespace can
// reach. The demo re-executes itself into new network and PID namespaces
// (as root, or as the user through a user namespace); the PID namespace
// makes sure that nothing it started outlives it, even if it is killed.
//
// The user's kubectl and weft status run outside: before re-executing,
// the demo listens on two loopback ports of the host and hands the
// sockets to the child, which accepts on them (a socket stays in the
// namespace it was made in) and forwards the bytes to the API server and
// to weft's xDS server inside. TLS passes through untouched; the API
// server's certificate names 127.0.0.1.

const (
	// inNamespaceEnv marks the re-executed demo inside its namespace.
	inNamespaceEnv = "WEFT_DEMO_IN_NAMESPACE"
	// advertiseEnv makes internal/testenv pass --advertise-address to
	// kube-apiserver: with no default route, it cannot pick one.
	advertiseEnv = "WEFT_TEST_APISERVER_ADVERTISE_ADDRESS"
	// nodeIP is the demo node's address, which the API server advertises.
	nodeIP = "192.0.2.1"
	// xdsAddr is where weft's xDS server listens inside the namespace,
	// xdsHost the name its certificate carries and the pods dial, and
	// statusAddr where it serves the proxies' status (CSDS).
	xdsAddr    = "127.0.0.1:15012"
	xdsHost    = "localhost"
	statusAddr = "127.0.0.1:15013"
)

// forwards are the host's ports that lead into the namespace.
type forwards struct {
	api, xds net.Listener
}

// Inherited descriptors of the forwards in the child (ExtraFiles start at 3).
const (
	apiForwardFD = 3
	xdsForwardFD = 4
)

// runOutside starts the demo again in its own namespaces and waits for it,
// passing on Ctrl-C. When no namespace can be made, it runs the demo here,
// without live traffic, and says why.
func runOutside(ctx context.Context, o options) error {
	fw, err := listenForwards()
	if err != nil {
		return err
	}
	cmd, err := startInNamespace(fw)
	// The child holds its own copies of the sockets.
	closeErr := errors.Join(fw.api.Close(), fw.xds.Close())
	if err != nil {
		fmt.Fprintf(o.out, "\n==> No network namespace for the demo (%v).\n"+
			"    It runs without its workloads and live traffic: EndpointSlices refuse loopback addresses,\n"+
			"    and the workloads need addresses of their own. Run it as root, or enable unprivileged\n"+
			"    user namespaces (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces), to see them.\n", err)
		return run(ctx, o, nil)
	}
	if closeErr != nil {
		return closeErr
	}
	return waitChild(ctx, cmd)
}

func listenForwards() (*forwards, error) {
	api, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for kubectl on the host: %w", err)
	}
	xds, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		api.Close()
		return nil, fmt.Errorf("listening for weft status on the host: %w", err)
	}
	return &forwards{api: api, xds: xds}, nil
}

// startInNamespace re-executes the demo in new network and PID namespaces:
// directly as root, else inside a user namespace that maps the user to
// root (which may set up its own network namespace).
func startInNamespace(fw *forwards) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the demo's own binary: %w", err)
	}
	var files []*os.File
	for _, l := range []net.Listener{fw.api, fw.xds} {
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			return nil, fmt.Errorf("handing a listener to the namespace: %w", err)
		}
		defer f.Close()
		files = append(files, f)
	}
	var errs []error
	for _, attr := range namespaceAttrs() {
		cmd := exec.Command(exe, os.Args[1:]...)
		cmd.Env = append(os.Environ(), inNamespaceEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.ExtraFiles = files
		cmd.SysProcAttr = attr
		if err := cmd.Start(); err != nil {
			errs = append(errs, err)
			continue
		}
		return cmd, nil
	}
	return nil, fmt.Errorf("creating network and PID namespaces: %w", errors.Join(errs...))
}

func namespaceAttrs() []*syscall.SysProcAttr {
	const flags = syscall.CLONE_NEWNET | syscall.CLONE_NEWPID
	var attrs []*syscall.SysProcAttr
	if os.Geteuid() == 0 {
		attrs = append(attrs, &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL})
	}
	return append(attrs, &syscall.SysProcAttr{
		Cloneflags:  flags | syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	})
}

// waitChild waits for the demo in its namespace; on Ctrl-C it passes the
// interrupt on, and kills it (its PID namespace with it) if it does not
// stop within a minute.
func waitChild(ctx context.Context, cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return childErr(err)
	case <-ctx.Done():
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		return childErr(err)
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done //nolint:errcheck // killed: its exit status says nothing more
		return errors.New("the demo did not stop within a minute of Ctrl-C: killed it and everything it started")
	}
}

func childErr(err error) error {
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return errAlreadyReported // it printed why
	}
	if err != nil {
		return fmt.Errorf("the demo in its namespace: %w", err)
	}
	return nil
}

// errAlreadyReported ends the demo with a failure whose cause is printed.
var errAlreadyReported = errors.New("")

// enterNamespace is the child's side: it brings up the namespace's
// loopback with the node's and the pods' addresses and takes over the
// forwarded sockets.
func enterNamespace(addrs []string) (*forwards, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("finding the namespace's loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("bringing up the namespace's loopback: %w", err)
	}
	for _, a := range append([]string{nodeIP}, addrs...) {
		addr, err := netlink.ParseAddr(a + "/32")
		if err != nil {
			return nil, err
		}
		if err := netlink.AddrAdd(lo, addr); err != nil {
			return nil, fmt.Errorf("adding %s to the namespace's loopback: %w", a, err)
		}
	}
	if err := os.Setenv(advertiseEnv, nodeIP); err != nil {
		return nil, err
	}
	api, err := inheritedListener(apiForwardFD, "the API server's forward")
	if err != nil {
		return nil, err
	}
	xds, err := inheritedListener(xdsForwardFD, "the xDS server's forward")
	if err != nil {
		return nil, err
	}
	return &forwards{api: api, xds: xds}, nil
}

func inheritedListener(fd uintptr, what string) (net.Listener, error) {
	f := os.NewFile(fd, what)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("taking over %s (descriptor %d): %w", what, fd, err)
	}
	return l, nil
}

// forward accepts connections on lis until it is closed and joins each to
// target.
func forward(lis net.Listener, target string) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		go join(c, target)
	}
}

func join(c net.Conn, target string) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}
