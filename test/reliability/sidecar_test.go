package reliability

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/walk"
)

// sidecar stands for an Envoy sidecar's xDS client: one delta ADS stream
// to the controller over TLS from the mesh CA with the pod's token, the
// node id and metadata its injected bootstrap gives it, subscribed to
// every listener and cluster and to its SDS secrets (its certificate and
// the roots), each response acknowledged. It keeps what it was last sent
// when the stream breaks, as Envoy does, and opens a new stream a second
// after one ends (Envoy's own backoff starts at half a second and grows to
// 30 s), until its context ends.
type sidecar struct {
	node, token string
	xds         string
	roots       *x509.CertPool // the controller's

	mu        sync.Mutex
	listeners map[string]*listenerv3.Listener
	clusters  map[string]*clusterv3.Cluster
	cert      *tls.Certificate
	trust     *x509.CertPool
	// leaves are the serials of every leaf it was sent, in order.
	leaves []string
	// streamErr is why its last stream ended.
	streamErr error
	// history is what it was sent and when its streams ended, the last
	// 400 events (a failed test logs it).
	history []string
}

// bearer is a stream's token as call credentials.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": wire.BearerPrefix + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// run keeps the sidecar's stream open until ctx ends.
func (s *sidecar) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.stream(ctx)
		s.mu.Lock()
		s.noteLocked(fmt.Sprintf("the stream ended: %v", err))
		s.streamErr = err
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *sidecar) stream(ctx context.Context) error {
	cc, err := grpc.NewClient(s.xds, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: s.roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(bearer(s.token)))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: s.node, Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		wire.MetaFlavour:      structpb.NewStringValue(string(wire.FlavourEnvoy)),
		wire.MetaCertDelivery: structpb.NewStringValue(string(wire.DeliverySDS)),
	}}}
	for i, req := range []*discovery.DeltaDiscoveryRequest{
		{TypeUrl: resource.ClusterType}, {TypeUrl: resource.ListenerType},
		{TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{translate.SecretCertificate, translate.SecretRoots}},
	} {
		if i == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if err := s.take(resp); err != nil {
			return err
		}
		if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
	}
}

// take keeps what a response carries.
func (s *sidecar) take(resp *discovery.DeltaDiscoveryResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listeners == nil {
		s.listeners, s.clusters = map[string]*listenerv3.Listener{}, map[string]*clusterv3.Cluster{}
	}
	var names []string
	for _, r := range resp.GetResources() {
		names = append(names, r.GetName())
	}
	s.noteLocked(fmt.Sprintf("%s (nonce %s): %v, removed %v", resp.GetTypeUrl(), resp.GetNonce(), names, resp.GetRemovedResources()))
	for _, name := range resp.GetRemovedResources() {
		delete(s.listeners, name)
		delete(s.clusters, name)
	}
	for _, r := range resp.GetResources() {
		switch resp.GetTypeUrl() {
		case resource.ListenerType:
			l := &listenerv3.Listener{}
			if err := r.GetResource().UnmarshalTo(l); err != nil {
				return err
			}
			s.listeners[r.GetName()] = l
		case resource.ClusterType:
			c := &clusterv3.Cluster{}
			if err := r.GetResource().UnmarshalTo(c); err != nil {
				return err
			}
			s.clusters[r.GetName()] = c
		case resource.SecretType:
			sec := &tlsv3.Secret{}
			if err := r.GetResource().UnmarshalTo(sec); err != nil {
				return err
			}
			switch r.GetName() {
			case translate.SecretCertificate:
				tc := sec.GetTlsCertificate()
				c, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
				if err != nil {
					return err
				}
				if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
					return err
				}
				s.cert = &c
				s.leaves = append(s.leaves, c.Leaf.SerialNumber.String())
			case translate.SecretRoots:
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(sec.GetValidationContext().GetTrustedCa().GetInlineBytes()) {
					return errors.New("the ROOTCA secret holds no certificate")
				}
				s.trust = pool
			}
		}
	}
	return nil
}

func (s *sidecar) noteLocked(what string) {
	s.history = append(s.history, time.Now().Format("15:04:05.000")+" "+what)
	if len(s.history) > 400 {
		s.history = s.history[len(s.history)-400:]
	}
}

// log returns its history.
func (s *sidecar) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.history, "\n")
}

// held returns the certificate and roots it holds, and a walker over the
// listeners and clusters it holds.
func (s *sidecar) held() (*tls.Certificate, *x509.CertPool, *walk.Walker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &translate.Resources{}
	for _, l := range s.listeners {
		r.Listeners = append(r.Listeners, l)
	}
	for _, c := range s.clusters {
		r.Clusters = append(r.Clusters, c)
	}
	return s.cert, s.trust, walk.New(r)
}

// issued lists the serials of the leaves it was sent.
func (s *sidecar) issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.leaves...)
}

// verify checks a peer's chain, at the time of the handshake, against
// roots and its SPIFFE ID against the ones accepted.
func verify(roots *x509.CertPool, accept []string, usage x509.ExtKeyUsage) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the peer presented no certificate")
		}
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
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		id, err := identity.IDOf(certs[0])
		if err != nil {
			return err
		}
		for _, a := range accept {
			if id.String() == a {
				return nil
			}
		}
		return fmt.Errorf("the peer is %s, none of %v", id, accept)
	}
}
