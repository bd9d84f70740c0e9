package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// follow keeps the latest certificate an SDS stream serves in cur, ACKing
// each response, until the stream ends.
func follow(s *sdsStream, cur *atomic.Pointer[tls.Certificate], roots *atomic.Pointer[x509.CertPool], errs chan<- error) {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			errs <- err
			return
		}
		for _, r := range resp.GetResources() {
			sec := &tlsv3.Secret{}
			if err := r.GetResource().UnmarshalTo(sec); err != nil {
				errs <- err
				return
			}
			switch r.GetName() {
			case translate.SecretCertificate:
				tc := sec.GetTlsCertificate()
				c, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
				if err != nil {
					errs <- err
					return
				}
				if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
					errs <- err
					return
				}
				cur.Store(&c)
			case translate.SecretRoots:
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(sec.GetValidationContext().GetTrustedCa().GetInlineBytes())
				roots.Store(pool)
			}
		}
		if err := s.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
			errs <- err
			return
		}
	}
}

// verifyPeer checks a peer's chain against the roots and its SPIFFE ID.
func verifyPeer(roots *atomic.Pointer[x509.CertPool], want identity.ID, usage x509.ExtKeyUsage) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots.Load(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		if id, err := identity.IDOf(certs[0]); err != nil || id != want {
			return fmt.Errorf("peer is %v (%v), want %v", id, err, want)
		}
		return nil
	}
}

// TestOneMinuteLeavesUnderContinuousTraffic: two sidecars with one-minute
// certificates from weft's SDS talk mutual TLS without pause, a new
// handshake per request (so each renewed certificate is put to use), for
// longer than three renewals: no request fails, and the server sees the
// client's certificate change at least three times.
func TestOneMinuteLeavesUnderContinuousTraffic(t *testing.T) {
	f := newAuthFixture(t, map[string]string{"a": "client", "c": "server"}, func(s *Options, f *authFixture) {
		s.Signer, s.TrustDomain, s.LeafTTL = f.meshRoot, "cluster.local", identity.MinLeafTTL
	})
	var clientCert, serverCert atomic.Pointer[tls.Certificate]
	var clientRoots, serverRoots atomic.Pointer[x509.CertPool]
	errs := make(chan error, 2)
	go follow(openSDS(t, f, "a"), &clientCert, &clientRoots, errs)
	go follow(openSDS(t, f, "c"), &serverCert, &serverRoots, errs)
	deadline := time.Now().Add(60 * time.Second)
	for clientCert.Load() == nil || serverCert.Load() == nil || clientRoots.Load() == nil || serverRoots.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no certificates over SDS")
		}
		time.Sleep(10 * time.Millisecond)
	}
	clientID := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}
	serverID := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "server"}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var mu sync.Mutex
	seen := map[string]bool{}
	srvCfg := &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAnyClientCert,
		GetCertificate:        func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serverCert.Load(), nil },
		VerifyPeerCertificate: verifyPeer(&serverRoots, clientID, x509.ExtKeyUsageClientAuth)}
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				s := tls.Server(conn, srvCfg)
				if err := s.Handshake(); err != nil {
					return
				}
				mu.Lock()
				seen[s.ConnectionState().PeerCertificates[0].SerialNumber.String()] = true
				mu.Unlock()
				_, _ = s.Write([]byte("ok"))
			}()
		}
	}()
	cliCfg := &tls.Config{MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCert.Load(), nil },
		// SPIFFE certificates carry no host name: the chain and the ID
		// are checked instead.
		InsecureSkipVerify:    true, //nolint:gosec // replaced by VerifyPeerCertificate
		VerifyPeerCertificate: verifyPeer(&clientRoots, serverID, x509.ExtKeyUsageServerAuth)}

	// The traffic runs for at least 100 s (renewals at about 30, 60 and
	// 90 s) and on until the server has seen four client certificates, as
	// renewals come late on a loaded machine; it stops at 150 s, or short
	// of the fixture's deadline, whichever is first.
	distinctSeen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	var sent, failed int
	var lastErr error
	start := time.Now()
	least, most := start.Add(100*time.Second), start.Add(150*time.Second)
	if d, ok := f.ctx.Deadline(); ok && d.Add(-10*time.Second).Before(most) {
		most = d.Add(-10 * time.Second)
	}
	for now := time.Now(); now.Before(most) && (now.Before(least) || distinctSeen() < 4); now = time.Now() {
		select {
		case err := <-errs:
			t.Fatalf("an SDS stream ended: %v", err)
		default:
		}
		sent++
		if err := request(f.ctx, lis.Addr().String(), cliCfg); err != nil {
			failed++
			lastErr = err
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start).Round(time.Second)
	distinct := distinctSeen()
	t.Logf("%d requests in %v, %d failed; the server saw %d client certificates", sent, elapsed, failed, distinct)
	if failed > 0 {
		t.Errorf("%d of %d requests failed across renewals (last: %v)", failed, sent, lastErr)
	}
	if distinct < 4 {
		t.Errorf("the server saw %d client certificates in %v of one-minute leaves, want the first and three renewals", distinct, elapsed)
	}
}

func request(ctx context.Context, addr string, cfg *tls.Config) error {
	// A generous deadline: on a loaded machine a handshake can be slow,
	// and a slow request is not a failed one.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	b, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if string(b) != "ok" {
		return errors.New("no answer")
	}
	return nil
}
