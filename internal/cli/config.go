package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// ResourceTypes are the xDS types weft sends, by the names the commands
// take (--type), in the order they are shown.
var ResourceTypes = []struct{ Name, URL string }{
	{"listeners", resource.ListenerType},
	{"routes", resource.RouteType},
	{"clusters", resource.ClusterType},
	{"endpoints", resource.EndpointType},
	{"secrets", resource.SecretType},
}

// typeName is the short name of a type URL (the URL itself when weft does
// not send it).
func typeName(url string) string {
	for _, t := range ResourceTypes {
		if t.URL == url {
			return t.Name
		}
	}
	return url
}

// ProxyConfig is what the xDS server says of one connected proxy: who it
// is, and per type what it was sent and acknowledged, with the resources.
type ProxyConfig struct {
	Node         string
	Flavour      string
	Identity     string
	CertExpiry   string
	CertDelivery string
	Types        []TypeConfig
	// Acknowledged is the generation of each MeshService, TrafficPolicy
	// and PeerAuthentication ("<Kind>/<namespace>/<name>") the
	// configuration the proxy last acknowledged was made from.
	Acknowledged map[string]int64
}

// TypeConfig is one xDS type of a proxy.
type TypeConfig struct {
	Name, URL string
	// Sent and Acknowledged are versions; Status is synced (the proxy
	// acknowledged what it was sent), stale (sent, not acknowledged yet),
	// rejected (with Rejection, the proxy's words) or not sent.
	Sent, Acknowledged string
	Status             string
	Rejection          string
	// Shown is the version Resources make when it is not Sent: the xDS
	// server's current resources, not sent yet.
	Shown     string
	Resources []Resource
}

// Resource is one resource, decoded.
type Resource struct {
	Name    string
	Message proto.Message
}

// FetchProxy asks the xDS server's client status service at addr for the
// proxy with node id node, with its resources.
func FetchProxy(ctx context.Context, addr, node string) (*statusv3.ClientConfig, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to the xDS server's status at %s: %w", addr, err)
	}
	defer cc.Close()
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{
		NodeMatchers: []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: node}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("asking %s for proxy %s: %w", addr, node, err)
	}
	for _, c := range resp.GetConfig() {
		if c.GetNode().GetId() == node {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: no proxy %s is connected to the xDS server at %s (is the pod running and meshed, and is this the replica it is connected to?)", ErrNotConnected, node, addr)
}

// ErrNotConnected is the error of a proxy the xDS server does not know.
var ErrNotConnected = errors.New("not connected")

// ParseProxyConfig decodes a proxy's client status.
func ParseProxyConfig(c *statusv3.ClientConfig) (*ProxyConfig, error) {
	meta := c.GetNode().GetMetadata().GetFields()
	pc := &ProxyConfig{Node: c.GetNode().GetId(), Flavour: meta[wire.MetaFlavour].GetStringValue(),
		Identity: meta[wire.MetaIdentity].GetStringValue(), CertExpiry: meta[wire.MetaCertExpiry].GetStringValue(),
		CertDelivery: meta[wire.MetaCertDelivery].GetStringValue(), Acknowledged: map[string]int64{}}
	for ref, g := range meta[wire.MetaAcknowledged].GetStructValue().GetFields() {
		pc.Acknowledged[ref] = int64(g.GetNumberValue())
	}
	sent := meta[wire.MetaSent].GetStructValue().GetFields()
	// Indexes, not pointers: the slice grows.
	byURL := map[string]int{}
	typeOf := func(url string) *TypeConfig {
		if i, ok := byURL[url]; ok {
			return &pc.Types[i]
		}
		pc.Types = append(pc.Types, TypeConfig{Name: typeName(url), URL: url, Sent: sent[url].GetStringValue(), Status: "not sent"})
		byURL[url] = len(pc.Types) - 1
		return &pc.Types[len(pc.Types)-1]
	}
	// The summary of each type first (it has no name), then its resources.
	for _, x := range c.GetGenericXdsConfigs() {
		if x.GetName() != "" {
			continue
		}
		tc := typeOf(x.GetTypeUrl())
		tc.Acknowledged = x.GetVersionInfo()
		switch x.GetConfigStatus() {
		case statusv3.ConfigStatus_SYNCED:
			tc.Status = "synced"
		case statusv3.ConfigStatus_STALE:
			tc.Status = "stale"
		case statusv3.ConfigStatus_ERROR:
			tc.Status, tc.Rejection = "rejected", x.GetErrorState().GetDetails()
		}
	}
	for _, x := range c.GetGenericXdsConfigs() {
		if x.GetName() == "" {
			continue
		}
		tc := typeOf(x.GetTypeUrl())
		if v := x.GetVersionInfo(); v != tc.Sent {
			tc.Shown = v
		}
		m, err := x.GetXdsConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", tc.Name, x.GetName(), err)
		}
		tc.Resources = append(tc.Resources, Resource{Name: x.GetName(), Message: m})
	}
	// Types in the order weft names them, then any other.
	rank := func(url string) int {
		if i := slices.IndexFunc(ResourceTypes, func(t struct{ Name, URL string }) bool { return t.URL == url }); i >= 0 {
			return i
		}
		return len(ResourceTypes)
	}
	slices.SortStableFunc(pc.Types, func(a, b TypeConfig) int { return rank(a.URL) - rank(b.URL) })
	return pc, nil
}

// Walkable returns a proxy's resources as the configuration walker takes
// them.
func (pc *ProxyConfig) Walkable() *translate.Resources {
	r := &translate.Resources{}
	for _, tc := range pc.Types {
		for _, res := range tc.Resources {
			switch m := res.Message.(type) {
			case *listenerv3.Listener:
				r.Listeners = append(r.Listeners, m)
			case *routev3.RouteConfiguration:
				r.Routes = append(r.Routes, m)
			case *clusterv3.Cluster:
				r.Clusters = append(r.Clusters, m)
			case *endpointv3.ClusterLoadAssignment:
				r.Endpoints = append(r.Endpoints, m)
			case *tlsv3.Secret:
				r.Secrets = append(r.Secrets, m)
			}
		}
	}
	return r
}

// configDoc is weft config's output.
type configDoc struct {
	Proxy       string    `json:"proxy"`
	Flavour     string    `json:"flavour,omitempty"`
	Identity    string    `json:"identity,omitempty"`
	Certificate string    `json:"certificate,omitempty"`
	Types       []typeDoc `json:"types"`
}

type typeDoc struct {
	Type         string        `json:"type"`
	TypeURL      string        `json:"typeUrl"`
	Status       string        `json:"status"`
	VersionSent  string        `json:"versionSent,omitempty"`
	VersionAcked string        `json:"versionAcknowledged,omitempty"`
	Rejection    string        `json:"rejection,omitempty"`
	VersionShown string        `json:"versionShown,omitempty"`
	Resources    []resourceDoc `json:"resources"`
}

type resourceDoc struct {
	Name   string          `json:"name"`
	Config json.RawMessage `json:"config"`
}

// WriteConfig writes a proxy's configuration as YAML or JSON (format),
// only the named types when types is not empty. Each resource is its
// protobuf JSON form (proto field names), under its name.
func WriteConfig(out io.Writer, pc *ProxyConfig, format string, types []string) error {
	if err := checkOutput(format, types); err != nil {
		return err
	}
	doc := configDoc{Proxy: pc.Node, Flavour: pc.Flavour, Identity: pc.Identity, Types: []typeDoc{}}
	if pc.CertExpiry != "" {
		doc.Certificate = pc.CertDelivery + ", expires " + pc.CertExpiry
	}
	for _, tc := range pc.Types {
		if len(types) > 0 && !slices.Contains(types, tc.Name) {
			continue
		}
		td := typeDoc{Type: tc.Name, TypeURL: tc.URL, Status: tc.Status, VersionSent: tc.Sent, VersionAcked: tc.Acknowledged,
			Rejection: tc.Rejection, VersionShown: tc.Shown, Resources: []resourceDoc{}}
		for _, r := range tc.Resources {
			raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r.Message)
			if err != nil {
				return fmt.Errorf("%s %s: %w", tc.Name, r.Name, err)
			}
			td.Resources = append(td.Resources, resourceDoc{Name: r.Name, Config: raw})
		}
		doc.Types = append(doc.Types, td)
	}
	raw, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if raw, err = yaml.JSONToYAML(raw); err != nil {
			return err
		}
	} else {
		raw = append(raw, '\n')
	}
	_, err = out.Write(raw)
	return err
}

// Config prints the configuration of the proxy of a pod (its node id:
// <pod>.<namespace>), as the xDS server at addr sent it.
func Config(ctx context.Context, addr, pod, namespace, format string, types []string, out io.Writer) error {
	if err := checkOutput(format, types); err != nil {
		return err
	}
	c, err := FetchProxy(ctx, addr, wire.NodeID(pod, namespace))
	if err != nil {
		return err
	}
	pc, err := ParseProxyConfig(c)
	if err != nil {
		return err
	}
	return WriteConfig(out, pc, format, types)
}

// checkOutput checks weft config's -o and --type.
func checkOutput(format string, types []string) error {
	for _, t := range types {
		if !slices.ContainsFunc(ResourceTypes, func(r struct{ Name, URL string }) bool { return r.Name == t }) {
			return fmt.Errorf("--type: %q is none of listeners, routes, clusters, endpoints, secrets", t)
		}
	}
	if format != "yaml" && format != "json" {
		return fmt.Errorf("-o: %q is neither yaml nor json", format)
	}
	return nil
}

// SplitList reads a comma-separated flag value.
func SplitList(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
