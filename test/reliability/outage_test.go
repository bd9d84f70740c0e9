package reliability

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/walk"
)

// ledgerIP is the address of the server's pod.
const ledgerIP = "192.0.2.81"

// leafTTL is the workload certificates' lifetime in this test: the least
// --leaf-ttl takes.
const leafTTL = identity.MinLeafTTL

// TestCertificatesThroughAnOutage: two sidecars (weft's SDS client
// standing for Envoy: one authenticated delta ADS stream each) with
// one-minute leaves from the controller binary call each other over
// mutual TLS without pause under a STRICT PeerAuthentication, a new
// handshake per call, each side doing what its configuration from weft
// says (the client speaks TLS when its cluster says so, the server takes
// plain text only when its inbound chain lets a plain-text caller in;
// both read through internal/xds/walk). The controller, which is the CA,
// is killed just before a leaf is due for renewal and stays down a
// quarter of the lifetime: no call fails. Killed again for longer than a
// lifetime: calls fail once a leaf expires, every failure a TLS
// handshake's, and the server sees no plain-text connection; started
// again, the sidecars come back by themselves, get new leaves and the
// calls succeed again (the time it takes is logged).
func TestCertificatesThroughAnOutage(t *testing.T) {
	t.Parallel() // each in its own network namespace, with its own API server
	if !testenv.InOwnNetworkNamespace(t, ledgerIP) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	t.Cleanup(cancel)
	r := newMeshRig(ctx, t)
	args := []string{"--cert-delivery=sds", "--leaf-ttl=" + leafTTL.String()}
	r.start(args...)

	// bank: ledger (a TCP port, STRICT) served by ledger-0, called by
	// teller-0.
	const ns = "bank"
	r.must(r.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	r.must(r.c.Create(ctx, &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}))
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ledger"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "ledger"},
		Ports:    []corev1.ServicePort{{Name: "tcp", Port: 9080, TargetPort: intstr.FromString("tcp")}},
	}}
	r.must(r.c.Create(ctx, svc))
	r.must(r.c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ledger"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "ledger", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolTCP}}}}))
	r.must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		return r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: wire.BundleConfigMap}, &corev1.ConfigMap{})
	}))
	var bundle corev1.ConfigMap
	r.must(r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: wire.BundleConfigMap}, &bundle))
	controllerRoots := x509.NewCertPool()
	controllerRoots.AppendCertsFromPEM([]byte(bundle.Data[wire.BundleKey]))

	sidecars := map[string]*sidecar{}
	for _, name := range []string{"ledger-0", "teller-0"} {
		sa := strings.TrimSuffix(name, "-0")
		r.must(r.c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}))
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": sa}},
			Spec: corev1.PodSpec{NodeName: r.node.Name, ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		r.must(r.c.Create(ctx, p))
		var account corev1.ServiceAccount
		r.must(r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: sa}, &account))
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: []string{wire.TokenAudience}, ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: name, UID: p.UID}}}
		r.must(r.c.SubResource("token").Create(ctx, &account, tr))
		sidecars[name] = &sidecar{node: wire.NodeID(name, ns), token: tr.Status.Token, xds: r.xdsAddr, roots: controllerRoots}
	}
	server, clientSide := sidecars["ledger-0"], sidecars["teller-0"]
	tellerID := wire.SPIFFEID("cluster.local", ns, "teller")

	// The server's end: what ledger-0's application would see behind its
	// sidecar. A connection that does not start with a TLS handshake
	// record is plain text: counted, and served only if the sidecar's
	// inbound chain lets a plain-text caller in.
	lis, err := net.Listen("tcp", ledgerIP+":0")
	r.must(err)
	t.Cleanup(func() { lis.Close() })
	port := uint32(lis.Addr().(*net.TCPAddr).Port)
	var plainSeen, plainServed atomic.Int64
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go serveLedger(conn, server, port, tellerID, &plainSeen, &plainServed)
		}
	}()
	r.must(r.c.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "ledger-0", Labels: map[string]string{discoveryv1.LabelServiceName: "ledger"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Port: ptr.To(int32(port))}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ledgerIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "ledger-0"}}},
	}))
	r.must(r.c.Get(ctx, client.ObjectKeyFromObject(svc), svc))
	for _, s := range sidecars {
		go s.run(ctx)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for name, s := range sidecars {
				t.Logf("what %s was sent:\n%s", name, s.log())
			}
		}
	})
	dest := walk.Request{DestinationIP: svc.Spec.ClusterIP, DestinationPort: 9080}
	// Both sidecars hold a leaf, the client a TLS cluster for ledger and
	// the server a STRICT inbound chain for its port.
	r.must(testenv.Eventually(ctx, 2*time.Minute, func(context.Context) error {
		for name, s := range sidecars {
			if cert, trust, _ := s.held(); cert == nil || trust == nil {
				return fmt.Errorf("%s has no certificate yet (its stream: %v)", name, s.streamErr)
			}
		}
		_, _, w := clientSide.held()
		res, err := w.Sidecar(dest)
		if err != nil {
			return err
		}
		if res.Clusters[0].TLS == nil {
			return fmt.Errorf("teller-0's cluster %s speaks plain text", res.Clusters[0].Name)
		}
		_, _, sw := server.held()
		in, err := sw.SidecarInbound(port, walk.Caller{}, walk.Request{})
		if err != nil {
			return err
		}
		if in.Refused == "" {
			return errors.New("ledger-0's inbound chain lets a plain-text caller in")
		}
		return nil
	}))

	calls := startLedgerCalls(ctx, clientSide, dest, ledgerIP+":"+fmt.Sprint(port), 50*time.Millisecond, 10*time.Minute)
	r.must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		if calls.ok.Load() == 0 {
			return fmt.Errorf("no call succeeded yet: %v", calls.lastErr())
		}
		return nil
	}))

	// A short outage, at the worst moment: just before the leaf that is
	// due first would be renewed, so that it has the least lifetime left
	// (half, less the renewal's tick) while the CA is away.
	due := time.Time{}
	var expires time.Time
	for _, s := range sidecars {
		cert, _, _ := s.held()
		if at := identity.RenewAt(cert.Leaf); due.IsZero() || at.Before(due) {
			due, expires = at, cert.Leaf.NotAfter
		}
	}
	time.Sleep(time.Until(due.Add(-2 * time.Second)))
	short := leafTTL / 4
	before := map[string]int{}
	for name, s := range sidecars {
		before[name] = len(s.issued())
	}
	failedBefore := calls.failed.Load()
	r.proc.Kill()
	killed := time.Now()
	t.Logf("short outage: the controller killed with %v left on the leaf that expires first", time.Until(expires).Round(100*time.Millisecond))
	r.proc = nil
	time.Sleep(short)
	r.start(args...)
	restarted := time.Now()
	r.must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		for name, s := range sidecars {
			if len(s.issued()) <= before[name] {
				return fmt.Errorf("%s has no new leaf since the restart (its stream: %v)", name, s.streamErr)
			}
		}
		return nil
	}))
	renewed := time.Since(restarted)
	margin := time.Until(expires)
	if n := calls.failed.Load() - failedBefore; n > 0 {
		t.Errorf("short outage (%v): %d calls failed; the first: %v", short, n, calls.firstErr())
	}
	t.Logf("short outage: down %v (until the controller served again); both sidecars had new leaves %v later, %v before the old one would have expired; %d calls so far, %d failed",
		restarted.Sub(killed).Round(100*time.Millisecond), renewed.Round(100*time.Millisecond), margin.Round(100*time.Millisecond),
		calls.sent.Load(), calls.failed.Load())

	// A long outage: longer than a lifetime. Calls fail once a leaf
	// expires, closed.
	long := leafTTL + 15*time.Second
	failedBefore = calls.failed.Load()
	r.proc.Kill()
	r.proc = nil
	killed = time.Now()
	calls.markFailures(killed)
	time.Sleep(long)
	// Still configured as weft left them: the client speaks TLS, the
	// server takes none but TLS.
	_, _, w := clientSide.held()
	if res, err := w.Sidecar(dest); err != nil || res.Clusters[0].TLS == nil {
		t.Errorf("teller-0's configuration after %v without the controller: %v, %+v", long, err, res)
	}
	r.start(args...)
	restarted = time.Now()
	okAtRestart := calls.ok.Load()
	r.must(testenv.Eventually(ctx, 2*time.Minute, func(context.Context) error {
		if calls.ok.Load() == okAtRestart {
			return fmt.Errorf("no call has succeeded since the restart; the last error: %v", calls.lastErr())
		}
		return nil
	}))
	recovered := time.Since(restarted)
	// And they go on succeeding: ten seconds without a failure.
	failedAtRecovery := calls.failed.Load()
	time.Sleep(10 * time.Second)
	if n := calls.failed.Load() - failedAtRecovery; n > 0 {
		t.Errorf("%d calls failed after the calls recovered; the last: %v", n, calls.lastErr())
	}
	calls.stop()
	firstFailure, kinds := calls.failures()
	failedLong := calls.failed.Load() - failedBefore
	t.Logf("long outage: down %v; the first call failed %v after the kill; %d calls failed, by kind %v; calls succeeded again %v after the restart",
		long, firstFailure.Round(100*time.Millisecond), failedLong, kinds, recovered.Round(100*time.Millisecond))
	t.Logf("the whole run: %d calls, %d failed; the server saw %d plain-text connections", calls.sent.Load(), calls.failed.Load(), plainSeen.Load())
	if failedLong == 0 {
		t.Error("no call failed while every leaf had expired")
	}
	if firstFailure < leafTTL/2-5*time.Second {
		t.Errorf("calls began to fail %v after the kill, before any leaf could have expired", firstFailure)
	}
	for kind := range kinds {
		if kind != "tls" {
			t.Errorf("calls failed for another reason than the TLS handshake: %v (the first: %v)", kinds, calls.firstErr())
		}
	}
	if n := plainSeen.Load(); n > 0 {
		t.Errorf("the server saw %d plain-text connections (%d served) under STRICT", n, plainServed.Load())
	}
	if recovered > time.Minute {
		t.Errorf("the calls recovered %v after the restart, want within a minute", recovered)
	}
}

// serveLedger serves one connection to ledger-0 as its sidecar's
// configuration says: TLS (a handshake record first) with the sidecar's
// leaf, requiring the caller's from the sidecar's roots and checking it
// is the teller, or plain text if the inbound chain lets a plain-text
// caller in. It answers "ok".
func serveLedger(conn net.Conn, sc *sidecar, port uint32, teller string, plainSeen, plainServed *atomic.Int64) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	head, err := br.Peek(1)
	if err != nil {
		return
	}
	cert, trust, w := sc.held()
	if head[0] != 0x16 { // not a TLS handshake record
		plainSeen.Add(1)
		if in, err := w.SidecarInbound(port, walk.Caller{}, walk.Request{}); err != nil || in.Refused != "" {
			return
		}
		plainServed.Add(1)
		_, _ = conn.Write([]byte("ok"))
		return
	}
	s := tls.Server(peeked{br, conn}, &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAnyClientCert,
		Certificates: []tls.Certificate{*cert}, VerifyPeerCertificate: verify(trust, []string{teller}, x509.ExtKeyUsageClientAuth)})
	defer s.Close() // with close_notify: the answer is whole
	if err := s.Handshake(); err != nil {
		return
	}
	_, _ = s.Write([]byte("ok"))
}

// peeked is a connection whose first bytes were read into a buffer.
type peeked struct {
	r *bufio.Reader
	net.Conn
}

func (p peeked) Read(b []byte) (int, error) { return p.r.Read(b) }

// ledgerCalls are the teller's calls, made as its sidecar's configuration
// says: to the endpoint of the cluster its outbound chain for dest names,
// over TLS with its leaf when the cluster says TLS (checking the server's
// identity as the cluster says), else in plain text.
type ledgerCalls struct {
	sent, ok, failed atomic.Int64
	mu               sync.Mutex
	first, last      error
	since            time.Time
	firstFailure     time.Duration
	kinds            map[string]int
	stop             func()
}

func startLedgerCalls(ctx context.Context, sc *sidecar, dest walk.Request, endpoint string, pace, limit time.Duration) *ledgerCalls {
	c := &ledgerCalls{kinds: map[string]int{}}
	ctx, cancel := context.WithTimeout(ctx, limit)
	call := func(context.Context) (struct{}, error) { return struct{}{}, callLedger(sc, dest, endpoint) }
	wait := repeat(ctx, pace, call, func(_ struct{}, err error) {
		c.sent.Add(1)
		if err == nil {
			c.ok.Add(1)
			return
		}
		c.failed.Add(1)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.first == nil {
			c.first = err
		}
		c.last = err
		if !c.since.IsZero() {
			if c.firstFailure == 0 {
				c.firstFailure = time.Since(c.since)
			}
			kind := "other"
			if strings.Contains(err.Error(), "tls: ") || strings.Contains(err.Error(), "x509: ") {
				kind = "tls"
			}
			c.kinds[kind]++
		}
	})
	c.stop = func() {
		cancel()
		wait()
	}
	return c
}

func callLedger(sc *sidecar, dest walk.Request, endpoint string) error {
	cert, trust, w := sc.held()
	res, err := w.Sidecar(dest)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", endpoint, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var rw io.ReadWriter = conn
	if up := res.Clusters[0].TLS; up != nil {
		tc := tls.Client(conn, &tls.Config{MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
			// SPIFFE certificates carry no host name: the chain and the
			// identity are checked instead.
			InsecureSkipVerify:    true, //nolint:gosec // replaced by VerifyPeerCertificate
			VerifyPeerCertificate: verify(trust, up.SANs, x509.ExtKeyUsageServerAuth)})
		if err := tc.Handshake(); err != nil {
			return err
		}
		rw = tc
	} else if _, err := conn.Write([]byte("plain")); err != nil {
		return err
	}
	// TLS 1.3: a server that refuses the client's certificate says so
	// after the client's handshake is done, on the first read.
	got, err := io.ReadAll(rw)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if string(got) != "ok" {
		return fmt.Errorf("the ledger answered %q", got)
	}
	return nil
}

// markFailures starts classifying failures from since.
func (c *ledgerCalls) markFailures(since time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.since, c.firstFailure, c.kinds = since, 0, map[string]int{}
}

// failures says how long after the mark the first call failed, and how
// many failed of each kind since.
func (c *ledgerCalls) failures() (time.Duration, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := map[string]int{}
	for k, n := range c.kinds {
		kinds[k] = n
	}
	return c.firstFailure, kinds
}

func (c *ledgerCalls) firstErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

func (c *ledgerCalls) lastErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}
