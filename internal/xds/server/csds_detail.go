package server

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/wire"
)

// addDetail adds to a proxy's client status what weft config, describe and
// trace read: every resource it was sent, as sent (one entry each, named,
// with the version of its type it came in), the version of each type it
// was sent (wire.MetaSent), and the generation of each MeshService,
// TrafficPolicy and PeerAuthentication that the configuration it
// acknowledged was made from (wire.MetaAcknowledged). A sidecar's SDS
// secrets are given with their certificates alone: no key leaves.
func (s *Server) addDetail(cfg *statusv3.ClientConfig, meta map[string]*structpb.Value, acked, nacked map[string]string) {
	id := cfg.GetNode().GetId()
	sent := map[string]*structpb.Value{}
	for _, h := range s.cache.Held(id) {
		sent[h.TypeURL] = structpb.NewStringValue(h.Sent)
		for _, r := range h.Resources {
			a := r.Any
			if h.TypeURL == resource.SecretType {
				if a = publicPart(a); a == nil {
					continue
				}
			}
			x := &statusv3.ClientConfig_GenericXdsConfig{TypeUrl: h.TypeURL, Name: r.Name, VersionInfo: h.Version, XdsConfig: a}
			switch {
			case h.Version != h.Sent:
				// The cache's current resources, not sent yet.
				x.ConfigStatus = statusv3.ConfigStatus_NOT_SENT
			case strings.HasPrefix(nacked[h.TypeURL], "version "+h.Sent+":"):
				x.ConfigStatus, x.ClientStatus = statusv3.ConfigStatus_ERROR, adminv3.ClientResourceStatus_NACKED
			case acked[h.TypeURL] == h.Sent:
				x.ConfigStatus, x.ClientStatus = statusv3.ConfigStatus_SYNCED, adminv3.ClientResourceStatus_ACKED
			}
			cfg.GenericXdsConfigs = append(cfg.GenericXdsConfigs, x)
		}
	}
	meta[wire.MetaSent] = structpb.NewStructValue(&structpb.Struct{Fields: sent})
	gens := map[string]*structpb.Value{}
	for ref, g := range s.acks.Acknowledged(id) {
		gens[ref.String()] = structpb.NewNumberValue(float64(g))
	}
	meta[wire.MetaAcknowledged] = structpb.NewStructValue(&structpb.Struct{Fields: gens})
}

// publicPart keeps of an SDS secret what is public: its name, and the
// certificate chain or the trusted roots. Anything else (the private key,
// session ticket keys, generic secrets) is left out; nil when the secret
// cannot be read.
func publicPart(a *anypb.Any) *anypb.Any {
	var sec tlsv3.Secret
	if err := a.UnmarshalTo(&sec); err != nil {
		return nil
	}
	out := &tlsv3.Secret{Name: sec.GetName()}
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		out.Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: t.TlsCertificate.GetCertificateChain()}}
	case *tlsv3.Secret_ValidationContext:
		out.Type = &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: t.ValidationContext.GetTrustedCa()}}
	}
	pub, err := anypb.New(out)
	if err != nil {
		return nil
	}
	return pub
}

// nodeMatch turns a request's node matchers into a test of node ids: a
// node matches when any matcher's node_id matches it. Nil when the request
// names no node (every proxy). weft matches nodes by id alone.
func nodeMatch(ms []*matcherv3.NodeMatcher) (func(string) bool, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	var tests []func(string) bool
	for i, m := range ms {
		if len(m.GetNodeMetadatas()) > 0 {
			return nil, fmt.Errorf("node_matchers[%d].node_metadatas: weft matches nodes by node_id only", i)
		}
		if m.GetNodeId() == nil {
			return nil, fmt.Errorf("node_matchers[%d].node_id: required", i)
		}
		f, err := stringMatch(m.GetNodeId())
		if err != nil {
			return nil, fmt.Errorf("node_matchers[%d].node_id: %w", i, err)
		}
		tests = append(tests, f)
	}
	return func(id string) bool {
		for _, f := range tests {
			if f(id) {
				return true
			}
		}
		return false
	}, nil
}

func stringMatch(sm *matcherv3.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string {
		if sm.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return func(s string) bool { return fold(s) == fold(p.Exact) }, nil
	case *matcherv3.StringMatcher_Prefix:
		return func(s string) bool { return strings.HasPrefix(fold(s), fold(p.Prefix)) }, nil
	case *matcherv3.StringMatcher_Suffix:
		return func(s string) bool { return strings.HasSuffix(fold(s), fold(p.Suffix)) }, nil
	case *matcherv3.StringMatcher_Contains:
		return func(s string) bool { return strings.Contains(fold(s), fold(p.Contains)) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	}
	return nil, errors.New("an exact, prefix, suffix, contains or safe_regex match is required")
}
