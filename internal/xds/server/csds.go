package server

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	certificatesv1 "k8s.io/api/certificates/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// csds answers the Client Status Discovery Service: what each connected
// proxy was sent, acknowledged and rejected, per xDS type. "weft status"
// reads it.
type csds struct {
	statusv3.UnimplementedClientStatusDiscoveryServiceServer
	s *Server
}

// FetchClientStatus lists every connected proxy, or those the request's
// node matchers name (by node id), with their resources (weft config,
// describe and trace), unless the request excludes resource contents.
func (c *csds) FetchClientStatus(ctx context.Context, req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	match, err := nodeMatch(req.GetNodeMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return c.s.clientStatus(ctx, match, match != nil && !req.GetExcludeResourceContents()), nil
}

// clientStatus takes what the server's stages know of each proxy that
// match accepts (every proxy when it is nil), with its resources when
// detail is set, then looks up pod certificates outside every lock (an API
// read per namespace, which must not stall the streams).
func (s *Server) clientStatus(ctx context.Context, match func(string) bool, detail bool) *statusv3.ClientStatusResponse {
	out, pending := s.proxiesStatus(match, detail)
	lists := map[string][]certificatesv1.PodCertificateRequest{}
	for _, pd := range pending {
		if pc, ok := s.podCertificate(ctx, pd.proxy, lists); ok {
			pd.meta[wire.MetaIdentity] = structpb.NewStringValue(pc.identity)
			pd.meta[wire.MetaCertExpiry] = structpb.NewStringValue(pc.notAfter.UTC().Format(time.RFC3339))
			pd.meta[wire.MetaCertDelivery] = structpb.NewStringValue(string(wire.DeliveryPodCertificate))
		}
	}
	return out
}

// podCertPending is a proxy served no SDS leaf, whose metadata may take its
// pod certificate.
type podCertPending struct {
	proxy translate.Proxy
	meta  map[string]*structpb.Value
}

// proxiesStatus reads each proxy's state from the stage that holds it
// (scheduler, SDS issuer, tracker, cache), one lock at a time.
func (s *Server) proxiesStatus(match func(string) bool, detail bool) (*statusv3.ClientStatusResponse, []podCertPending) {
	out := &statusv3.ClientStatusResponse{}
	var pending []podCertPending
	for _, v := range s.sched.snapshot() {
		id, p := v.proxy.ID, v.proxy
		if match != nil && !match(id) {
			continue
		}
		acked, nacked := s.acks.Replies(id)
		meta := map[string]*structpb.Value{wire.MetaFlavour: structpb.NewStringValue(string(p.Flavour))}
		// What the proxy proved, and the certificate weft serves it, if any.
		if v.proved {
			meta[wire.MetaIdentity] = structpb.NewStringValue("system:serviceaccount:" + v.who.Namespace + ":" + v.who.ServiceAccount)
		}
		var leafID identity.ID
		var notAfter time.Time
		hasLeaf := false
		if s.sds != nil {
			leafID, notAfter, hasLeaf = s.sds.Leaf(id)
		}
		if hasLeaf {
			meta[wire.MetaIdentity] = structpb.NewStringValue(leafID.String())
			meta[wire.MetaCertExpiry] = structpb.NewStringValue(notAfter.UTC().Format(time.RFC3339))
			meta[wire.MetaCertDelivery] = structpb.NewStringValue(string(wire.DeliverySDS))
		} else if s.PodCertificates != nil && p.Pod != "" {
			pending = append(pending, podCertPending{proxy: p, meta: meta})
		}
		cfg := &statusv3.ClientConfig{Node: &corev3.Node{Id: id, Metadata: &structpb.Struct{Fields: meta}}}
		versions := s.cache.Versions(id)
		types := make([]string, 0, len(versions))
		for t := range versions {
			types = append(types, t)
		}
		slices.Sort(types)
		for _, t := range types {
			x := &statusv3.ClientConfig_GenericXdsConfig{TypeUrl: t, VersionInfo: acked[t]}
			switch {
			case nacked[t] != "":
				x.ConfigStatus, x.ClientStatus = statusv3.ConfigStatus_ERROR, adminv3.ClientResourceStatus_NACKED
				x.ErrorState = &adminv3.UpdateFailureState{Details: nacked[t]}
			case acked[t] == versions[t]:
				x.ConfigStatus, x.ClientStatus = statusv3.ConfigStatus_SYNCED, adminv3.ClientResourceStatus_ACKED
			case acked[t] == "":
				x.ConfigStatus = statusv3.ConfigStatus_NOT_SENT
			default:
				x.ConfigStatus = statusv3.ConfigStatus_STALE
			}
			cfg.GenericXdsConfigs = append(cfg.GenericXdsConfigs, x)
		}
		if detail {
			s.addDetail(cfg, meta, acked, nacked)
		}
		out.Config = append(out.Config, cfg)
	}
	return out, pending
}

type podCert struct {
	identity string
	notAfter time.Time
}

// podCertificate finds the newest pod certificate weft issued for a
// proxy's pod (the PodCertificateRequests that PodCertificates reads,
// listed once per namespace into lists).
func (s *Server) podCertificate(ctx context.Context, p translate.Proxy, lists map[string][]certificatesv1.PodCertificateRequest) (podCert, bool) {
	ns, name, _ := strings.Cut(p.Pod, "/")
	items, ok := lists[ns]
	if !ok {
		var list certificatesv1.PodCertificateRequestList
		if err := s.PodCertificates.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return podCert{}, false
		}
		items = list.Items
		lists[ns] = items
	}
	var best podCert
	for _, pcr := range items {
		if pcr.Spec.PodName != name || pcr.Spec.SignerName != s.PodCertificateSigner || pcr.Status.NotAfter == nil ||
			pcr.Status.CertificateChain == "" {
			continue
		}
		if na := pcr.Status.NotAfter.Time; na.After(best.notAfter) {
			best = podCert{identity: wire.SPIFFEID(cmp.Or(s.TrustDomain, wire.DefaultTrustDomain), ns, pcr.Spec.ServiceAccountName), notAfter: na}
		}
	}
	return best, !best.notAfter.IsZero()
}
