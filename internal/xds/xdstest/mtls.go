package xdstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/wire"
)

// Certs is where a workload's certificate files are, as the injector lays
// them out for a pod certificate: the chain, the key and the mesh roots.
type Certs struct{ Dir string }

// Chain is the certificate chain file's path.
func (c Certs) Chain() string { return filepath.Join(c.Dir, wire.CertChainFileName) }

// Key is the private key file's path.
func (c Certs) Key() string { return filepath.Join(c.Dir, wire.KeyFileName) }

// Roots is the mesh roots file's path.
func (c Certs) Roots() string { return filepath.Join(c.Dir, wire.RootsFileName) }

// Bootstrap is grpc-go's xDS bootstrap for a workload of weft: the ADS
// server (plain text: these tests do not authenticate the xDS stream),
// the node id, the server Listener template, and a file-watcher
// certificate provider named as weft's TLS contexts name it, reading the
// files every second. Its node says nothing of its certificates' delivery
// (as a workload injected by a weft that did not write it).
func Bootstrap(ads, node string, certs Certs) string { return BootstrapAs(ads, node, "", certs) }

// BootstrapAs is Bootstrap for a workload injected with delivery: the node
// metadata the injector writes (flavour and delivery), and the certificate
// provider only with pod certificates (SDS gives a proxyless workload no
// files). An empty delivery writes no metadata and the provider.
func BootstrapAs(ads, node string, delivery wire.CertDelivery, certs Certs) string {
	b := map[string]any{
		"xds_servers":                            []any{map[string]any{"server_uri": ads, "channel_creds": []any{map[string]any{"type": "insecure"}}, "server_features": []any{"xds_v3"}}},
		"node":                                   map[string]any{"id": node},
		"server_listener_resource_name_template": wire.ServerListenerName("%s"),
	}
	if delivery != "" {
		b["node"] = map[string]any{"id": node, "metadata": map[string]any{wire.MetaFlavour: string(wire.FlavourGRPC), wire.MetaCertDelivery: string(delivery)}}
	}
	if delivery != wire.DeliverySDS {
		b["certificate_providers"] = map[string]any{wire.CertProviderInstance: map[string]any{"plugin_name": "file_watcher", "config": map[string]any{
			"certificate_file": certs.Chain(), "private_key_file": certs.Key(), "ca_certificate_file": certs.Roots(), "refresh_interval": "1s"}}}
	}
	out, _ := json.Marshal(b) // maps of strings and slices always marshal
	return string(out)
}

// NewMTLSClient dials xds:///<target> with grpc-go's xDS credentials: TLS
// as weft's clusters say (with the workload's certificates), plain text
// where they say nothing.
func NewMTLSClient(t testing.TB, ads, node, target string, certs Certs) *Client {
	t.Helper()
	return NewClientFrom(t, []byte(Bootstrap(ads, node, certs)), target)
}

// NewClientFrom is NewMTLSClient with a bootstrap of the caller's.
func NewClientFrom(t testing.TB, bootstrap []byte, target string) *Client {
	t.Helper()
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(creds), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &Client{cc}
}

// Answer is what a backend of StartXDSBackend says about one RPC.
type Answer struct {
	// Backend is the server's name; Caller the SPIFFE ID of the client's
	// certificate ("" over plain text), CallerSerial its serial number.
	Backend, Caller, CallerSerial string
	// Server is the SPIFFE ID of the certificate the server presented to
	// the client ("" over plain text).
	Server string
}

// Ask makes one RPC and returns what the backend and the connection say.
func (c *Client) Ask(ctx context.Context, opts ...grpc.CallOption) (Answer, error) {
	var md metadata.MD
	var p peer.Peer
	err := c.Invoke(ctx, "/weft.test.Reviews/Get", &emptypb.Empty{}, &emptypb.Empty{}, append(opts, grpc.Header(&md), grpc.Peer(&p))...)
	a := Answer{Backend: first(md.Get("backend")), Caller: first(md.Get("caller")), CallerSerial: first(md.Get("caller-serial"))}
	if leaf := peerLeaf(p.AuthInfo); leaf != nil && len(leaf.URIs) > 0 {
		a.Server = leaf.URIs[0].String()
	}
	return a, err
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func peerLeaf(info credentials.AuthInfo) *x509.Certificate {
	if tlsInfo, ok := info.(credentials.TLSInfo); ok && len(tlsInfo.State.PeerCertificates) > 0 {
		return tlsInfo.State.PeerCertificates[0]
	}
	return nil
}

// StartXDSBackend serves any method on lis as a grpc-go xDS server of node
// (configured by the Listener weft serves for lis's address, with the
// workload's certificates), answering with its name, the method (path) it
// was called with and the caller's identity. Connections last at most maxAge (0: forever), so that clients
// handshake again.
func StartXDSBackend(t testing.TB, lis net.Listener, ads, node, name string, certs Certs, maxAge time.Duration) {
	t.Helper()
	StartXDSBackendFrom(t, lis, []byte(Bootstrap(ads, node, certs)), name, maxAge)
}

// StartXDSBackendFrom is StartXDSBackend with a bootstrap of the caller's.
func StartXDSBackendFrom(t testing.TB, lis net.Listener, bootstrap []byte, name string, maxAge time.Duration) {
	t.Helper()
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	opts := []grpc.ServerOption{grpc.Creds(creds), xds.BootstrapContentsForTesting(bootstrap),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var in emptypb.Empty
			if err := stream.RecvMsg(&in); err != nil {
				return err
			}
			md := metadata.Pairs("backend", name)
			if m, ok := grpc.MethodFromServerStream(stream); ok {
				md.Append("method", m)
			}
			if p, ok := peer.FromContext(stream.Context()); ok {
				if leaf := peerLeaf(p.AuthInfo); leaf != nil {
					md.Append("caller-serial", leaf.SerialNumber.String())
					if len(leaf.URIs) > 0 {
						md.Append("caller", leaf.URIs[0].String())
					}
				}
			}
			if err := stream.SetHeader(md); err != nil {
				return err
			}
			return stream.SendMsg(&emptypb.Empty{})
		})}
	if maxAge > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: maxAge, MaxConnectionAgeGrace: 10 * time.Second}))
	}
	srv, err := xds.NewGRPCServer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

// IssueCerts writes, under dir, a workload's certificate files for id
// signed by ca (a fresh key, a day's lifetime) and the roots (ca's own
// certificate), as StartXDSBackend and NewMTLSClient read them.
func IssueCerts(t testing.TB, ca *identity.CA, dir string, id identity.ID) Certs {
	t.Helper()
	certs := Certs{Dir: dir}
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Issue(identity.LeafRequest{ID: id, PublicKey: key.Public(), TTL: identity.DefaultLeafTTL}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{
		certs.Key():   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		certs.Chain(): identity.EncodeCerts(chain),
		certs.Roots(): identity.EncodeCerts([][]byte{ca.Cert.Raw}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certs
}

// DialDirect dials a workload's address itself, as a caller that ignores
// the mesh's configuration would: a plain gRPC channel (no xDS) over
// mutual TLS with the caller's certificate files (DirectTLS).
func DialDirect(t testing.TB, addr string, certs Certs) *Client {
	t.Helper()
	cfg, err := DirectTLS(certs)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &Client{cc}
}

// DirectTLS is the TLS of a caller that dials a workload itself: its own
// certificate files, and the server's chain checked against the mesh
// roots (a workload's certificate names a SPIFFE ID, no host).
func DirectTLS(certs Certs) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certs.Chain(), certs.Key())
	if err != nil {
		return nil, err
	}
	rootsPEM, err := os.ReadFile(certs.Roots())
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootsPEM) {
		return nil, errors.New("no roots in " + certs.Roots())
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		// The chain is checked below, against the mesh roots; there is no
		// host name to check.
		InsecureSkipVerify: true, //nolint:gosec
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var chain []*x509.Certificate
			for _, der := range raw {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return err
				}
				chain = append(chain, c)
			}
			if len(chain) == 0 {
				return errors.New("the server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		}}, nil
}
