package redirect

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/internal/testenv"
)

// inNS runs fn on a fresh OS thread switched into ns (and, when uid is not
// 0, with that effective UID on this thread only). The thread is never
// unlocked, so the runtime throws it away afterwards instead of reusing a
// thread in another namespace or with another UID.
func inNS(ns netns.NsHandle, uid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering the network namespace: %w", err)
			return
		}
		if uid != 0 {
			// A raw setresuid changes this thread's credentials only
			// (syscall.Setresuid would change every thread's).
			if _, _, e := syscall.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
				errc <- fmt.Errorf("setting the thread's UID to %d: %w", uid, e)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}

// newNS creates a network namespace and returns a handle to it.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	hc := make(chan netns.NsHandle, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		h, err := netns.New()
		hc <- h
		errc <- err
	}()
	h, err := <-hc, <-errc
	if err != nil {
		t.Fatalf("creating a network namespace (root needed): %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// accepted is what a listener saw: which listener, and the connection's
// original destination when the kernel redirected it.
type accepted struct {
	listener string
	origDst  string
}

// listen listens on addr inside ns and reports every connection.
func listen(t *testing.T, ns netns.NsHandle, name, addr string, seen chan<- accepted) {
	t.Helper()
	var l net.Listener
	if err := inNS(ns, 0, func() (err error) { l, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			seen <- accepted{name, originalDst(c)}
			c.Close()
		}
	}()
}

// originalDst reads SO_ORIGINAL_DST, the destination before the redirect.
func originalDst(c net.Conn) string {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return "error: " + err.Error()
	}
	var dst string
	_ = raw.Control(func(fd uintptr) {
		// SO_ORIGINAL_DST returns a sockaddr_in; IPv6Mreq has room for it.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			dst = "none"
			return
		}
		port := binary.BigEndian.Uint16(m.Multiaddr[2:4])
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), port).String()
	})
	return dst
}

func dial(ns netns.NsHandle, uid int, addr string) error {
	return inNS(ns, uid, func() error {
		c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// TestCaptureInNetworkNamespace runs "weft init-redirect" for real inside
// a network namespace that the test makes (a pod), next to another (the
// network: a client and remote services) joined by a veth pair, and sends
// real TCP connections through the kernel's nftables NAT. No packet leaves
// the two namespaces.
func TestCaptureInNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root, to create network namespaces and nftables rules")
	}
	weft := testenv.Binary(t, "weft")

	pod, client := newNS(t), newNS(t)
	podNL, err := netlink.NewHandleAt(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer podNL.Close()
	clientNL, err := netlink.NewHandleAt(client)
	if err != nil {
		t.Fatal(err)
	}
	defer clientNL.Close()

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	up := func(h *netlink.Handle, name string, addrs ...string) {
		t.Helper()
		l, err := h.LinkByName(name)
		must(err)
		for _, a := range addrs {
			addr, err := netlink.ParseAddr(a)
			must(err)
			must(h.AddrAdd(l, addr))
		}
		must(h.LinkSetUp(l))
	}
	// The pod has loopback and eth0; the other namespace stands for the
	// rest of the network: its end of the veth also carries
	// documentation-range addresses of remote services, which the pod
	// reaches through a route.
	up(podNL, "lo")
	must(podNL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}))
	peer, err := podNL.LinkByName("peer0")
	must(err)
	must(podNL.LinkSetNsFd(peer, int(client)))
	up(podNL, "eth0", "198.51.100.1/24")
	up(clientNL, "lo")
	up(clientNL, "peer0", "198.51.100.2/24", "192.0.2.10/32", "192.0.2.70/32")
	eth0, err := podNL.LinkByName("eth0")
	must(err)
	must(podNL.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(192, 0, 2, 0), Mask: net.CIDRMask(24, 32)},
		Gw: net.IPv4(198, 51, 100, 2)}))

	args := []string{"init-redirect", "--proxy-uid=1337", "--exclude-outbound-ports=5432",
		"--exclude-outbound-cidrs=192.0.2.64/26", "--exclude-inbound-ports=15021"}
	var out []byte
	for range 2 { // twice: the second run must leave one set of rules
		must(inNS(pod, 0, func() (err error) {
			out, err = exec.Command(weft, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("weft init-redirect: %w\n%s", err, out)
			}
			return nil
		}))
	}
	if !strings.Contains(string(out), "redirect to :15001") {
		t.Errorf("init-redirect did not print its rules:\n%s", out)
	}

	// Exactly one table with the expected number of rules per chain.
	nft, err := nftables.New(nftables.WithNetNSFd(int(pod)))
	must(err)
	tables, err := nft.ListTablesOfFamily(nftables.TableFamilyINet)
	must(err)
	if len(tables) != 1 || tables[0].Name != TableName {
		t.Fatalf("tables after two runs: %v", tables)
	}
	cfg := Config{ProxyUID: 1337, OutboundPort: 15001, InboundPort: 15006, ExcludeInboundPorts: []uint16{15021},
		ExcludeOutboundPorts: []uint16{5432}, ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26")}}
	wantOut, wantPre := Rules(cfg)
	for chain, want := range map[string]int{"output": len(wantOut), "prerouting": len(wantPre)} {
		rules, err := nft.GetRules(tables[0], &nftables.Chain{Name: chain, Table: tables[0]})
		must(err)
		if len(rules) != want {
			t.Errorf("chain %s has %d rules, want %d", chain, len(rules), want)
		}
	}

	// The rules live in the pod's namespace only, and go with it: the
	// test's own namespace has no weft table.
	host, err := nftables.New()
	must(err)
	hostTables, err := host.ListTablesOfFamily(nftables.TableFamilyINet)
	must(err)
	for _, tb := range hostTables {
		if tb.Name == TableName {
			t.Errorf("a %s table appeared outside the pod's namespace", TableName)
		}
	}

	seen := make(chan accepted, 16)
	listen(t, pod, "outbound", "0.0.0.0:15001", seen)
	listen(t, pod, "inbound", "0.0.0.0:15006", seen)
	listen(t, client, "service", "192.0.2.10:80", seen)
	listen(t, client, "service-5432", "192.0.2.10:5432", seen)
	listen(t, client, "excluded-cidr", "192.0.2.70:80", seen)
	listen(t, pod, "local", "127.0.0.1:9000", seen)
	listen(t, pod, "health", "198.51.100.1:15021", seen)

	for _, tc := range []struct {
		name     string
		ns       netns.NsHandle
		uid      int
		addr     string
		listener string
	}{
		{"app outbound is captured", pod, 1000, "192.0.2.10:80", "outbound"},
		{"the proxy's own traffic is not", pod, 1337, "192.0.2.10:80", "service"},
		{"an excluded port is not", pod, 1000, "192.0.2.10:5432", "service-5432"},
		{"an excluded CIDR is not", pod, 1000, "192.0.2.70:80", "excluded-cidr"},
		{"loopback is not", pod, 1000, "127.0.0.1:9000", "local"},
		{"inbound to an app port is captured", client, 0, "198.51.100.1:8080", "inbound"},
		{"inbound to an excluded port is not", client, 0, "198.51.100.1:15021", "health"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := dial(tc.ns, tc.uid, tc.addr); err != nil {
				t.Fatalf("dialing %s as UID %d: %v", tc.addr, tc.uid, err)
			}
			select {
			case got := <-seen:
				// Which listener took the connection shows whether it was
				// captured. The original destination, read back with
				// SO_ORIGINAL_DST where conntrack knows the connection, is
				// always the address dialed: what the proxy routes by.
				if got.listener != tc.listener {
					t.Errorf("landed on %q, want %q", got.listener, tc.listener)
				}
				captured := tc.listener == "outbound" || tc.listener == "inbound"
				if got.origDst != tc.addr && (captured || got.origDst != "none") {
					t.Errorf("original destination %s, want %s", got.origDst, tc.addr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no listener saw the connection")
			}
		})
	}

	// Without the rules, the app's connection reaches the service itself.
	must(inNS(pod, 0, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
		return c.Flush()
	}))
	must(dial(pod, 1000, "192.0.2.10:80"))
	if got := <-seen; got.listener != "service" {
		t.Errorf("with the rules removed the connection landed on %q", got.listener)
	}
}
