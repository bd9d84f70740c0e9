// Package identitytest helps tests prove certificates with a real TLS
// handshake.
package identitytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"time"

	"github.com/weftmesh/weft/internal/identity"
)

// MutualTLS runs a TLS 1.3 handshake over loopback between a server and a
// client certificate. Each side checks the other's chain against roots and
// that the other's SPIFFE ID is the one it expects; the server then writes
// a few bytes the client reads.
func MutualTLS(server, client tls.Certificate, serverExpects, clientExpects identity.ID, roots *x509.CertPool) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		s := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequireAnyClientCert,
			VerifyPeerCertificate: expect(serverExpects, roots, x509.ExtKeyUsageClientAuth), MinVersion: tls.VersionTLS13})
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = s.Write([]byte("ok"))
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: &tls.Config{Certificates: []tls.Certificate{client},
		// SPIFFE certificates carry no host name: the peer is checked by
		// chain and ID instead.
		InsecureSkipVerify:    true, //nolint:gosec // replaced by VerifyPeerCertificate
		VerifyPeerCertificate: expect(clientExpects, roots, x509.ExtKeyUsageServerAuth), MinVersion: tls.VersionTLS13}}).DialContext(ctx, "tcp", lis.Addr().String())
	if err == nil {
		_, err = io.ReadAll(conn)
		conn.Close()
	}
	return errors.Join(err, <-done)
}

func expect(want identity.ID, roots *x509.CertPool, usage x509.ExtKeyUsage) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the peer sent no certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, r := range raw[1:] {
			if c, err := x509.ParseCertificate(r); err == nil {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		got, err := identity.IDOf(leaf)
		if err != nil {
			return err
		}
		if got != want {
			return errors.New("the peer is " + got.String() + ", not " + want.String())
		}
		return nil
	}
}
