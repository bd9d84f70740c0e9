package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/walk"
)

// TraceRequest is the request weft trace follows through a proxy.
type TraceRequest struct {
	// Scheme is grpc, http or tcp; Host the service's host name (or an
	// address), Port its port, Path the request's path (a gRPC method is
	// /<service>/<method>).
	Scheme string
	Host   string
	Port   uint32
	Path   string
	Method string
	// Headers are the request's headers (lower-case names).
	Headers map[string]string
	// Inbound says the request comes into the pod from a caller: From
	// (a SPIFFE ID, or <namespace>/<serviceaccount> in the mesh's trust
	// domain) over mTLS, or in plain text (From empty).
	Inbound bool
	From    string
}

// principal is the SPIFFE ID of the request's caller.
func (r TraceRequest) principal(trustDomain string) string {
	if r.From == "" || strings.HasPrefix(r.From, "spiffe://") {
		return r.From
	}
	ns, sa, _ := strings.Cut(r.From, "/")
	return wire.SPIFFEID(trustDomain, ns, sa)
}

// ParseTraceRequest reads weft trace's request: a URL
// (grpc://host:port/pkg.Service/Method, http://host:port/path or
// tcp://host:port), headers as name=value, a method (default POST for
// gRPC, GET for HTTP), and for a request into the pod the caller (from:
// <namespace>/<serviceaccount> or a SPIFFE ID; plaintext for a caller
// without mTLS). The host may be left out of a request into the pod
// (grpc://:9080/...).
func ParseTraceRequest(raw string, headers []string, method, from string, plaintext bool) (TraceRequest, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return TraceRequest{}, fmt.Errorf("request %q: %w", raw, err)
	}
	req := TraceRequest{Scheme: u.Scheme, Host: u.Hostname(), Path: u.EscapedPath(), Method: method, Headers: map[string]string{}}
	switch u.Scheme {
	case "grpc":
		req.Method = cmpOr(method, "POST")
		req.Headers["content-type"] = "application/grpc"
	case "http":
		req.Method = cmpOr(method, "GET")
	case "tcp":
		if u.Path != "" || len(headers) > 0 {
			return TraceRequest{}, fmt.Errorf("request %q: a tcp:// request has no path or headers", raw)
		}
	default:
		return TraceRequest{}, fmt.Errorf("request %q: the scheme must be grpc, http or tcp", raw)
	}
	if req.Path == "" && u.Scheme != "tcp" {
		req.Path = "/"
	}
	if u.RawQuery != "" {
		req.Path += "?" + u.RawQuery
	}
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil || port == 0 {
		return TraceRequest{}, fmt.Errorf("request %q: give the service's port (host:port)", raw)
	}
	req.Port = uint32(port)
	for _, h := range headers {
		name, value, ok := strings.Cut(h, "=")
		if !ok {
			name, value, ok = strings.Cut(h, ":")
		}
		if !ok || strings.TrimSpace(name) == "" {
			return TraceRequest{}, fmt.Errorf("-H %q: want name=value", h)
		}
		req.Headers[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	}
	if from != "" && plaintext {
		return TraceRequest{}, errors.New("--from and --plaintext: a caller over mTLS or one in plain text, not both")
	}
	req.Inbound, req.From = from != "" || plaintext, from
	if from != "" && !strings.HasPrefix(from, "spiffe://") {
		if ns, sa, ok := strings.Cut(from, "/"); !ok || ns == "" || sa == "" || strings.Contains(sa, "/") {
			return TraceRequest{}, fmt.Errorf("--from %q: want <namespace>/<serviceaccount> or a SPIFFE ID", from)
		}
	}
	if !req.Inbound && req.Host == "" {
		return TraceRequest{}, fmt.Errorf("request %q: name the service (host:port) the pod calls, or give --from for a request into the pod", raw)
	}
	return req, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// PolicyInForce is the TrafficPolicy that shaped a route.
type PolicyInForce struct {
	Namespace, Name string
	// Generation is the generation in force in the model; Acknowledged
	// the one the proxy last acknowledged configuration from (0: none).
	Generation, Acknowledged int64
	// Route is the spec.http route the request matched (-1: none did, the
	// policy's defaults apply to the catch-all route).
	Route     int
	RouteName string
}

// ServedBy is the MeshService whose port a request into the pod reaches.
type ServedBy struct {
	Namespace, Name string
	Generation      int64
	// Rule is the spec.allow rule that let the caller in (-1: none, or
	// the default inbound policy did: DefaultInbound).
	Rule           int
	DefaultInbound wire.DefaultInbound
	HasRules       bool
	// Mode is the port's mTLS mode and ModeBy the PeerAuthentications
	// that set it.
	Mode   string
	ModeBy []mesh.Ref
}

// TraceReport is what weft trace found.
type TraceReport struct {
	Proxy, Flavour string
	Request        TraceRequest
	// Outbound is the walk of a request the pod sends; Inbound of one it
	// receives (InboundListener names the listener).
	Outbound        *walk.Result
	Inbound         *walk.Inbound
	InboundListener string
	// Service is the MeshService behind the route ("<namespace>/<name>"),
	// Policy the TrafficPolicy in force on its port; Served the
	// MeshService a request into the pod reaches. Note says why the
	// objects are not known, when they are not.
	Service string
	Policy  *PolicyInForce
	Served  *ServedBy
	Note    string
	// Caller is the SPIFFE ID the request into the pod came from.
	Caller string
}

// Trace follows a request through a proxy's configuration as the xDS
// server sent it, and names the objects that shaped what it found from the
// model m (nil when the objects could not be read).
func Trace(pc *ProxyConfig, req TraceRequest, m *Mesh, pod string) (*TraceReport, error) {
	rep := &TraceReport{Proxy: pc.Node, Flavour: pc.Flavour, Request: req}
	w := walk.New(pc.Walkable())
	wr := walk.Request{Method: req.Method, Path: req.Path, Headers: req.Headers}
	if req.Inbound {
		trustDomain := wire.DefaultTrustDomain
		if m != nil {
			trustDomain = m.Model.TrustDomain
		}
		caller := walk.Caller{MTLS: req.From != "", Principal: req.principal(trustDomain)}
		rep.Caller = caller.Principal
		var err error
		if pc.Flavour == string(wire.FlavourEnvoy) {
			rep.InboundListener = translate.InboundListener
			wr.Authority = net.JoinHostPort(cmpOr(req.Host, "localhost"), strconv.Itoa(int(req.Port)))
			rep.Inbound, err = w.SidecarInbound(req.Port, caller, wr)
		} else {
			addr, ok := serverAddress(pc, req.Port)
			if !ok {
				return nil, fmt.Errorf("proxy %s was sent no server Listener for port %d: no MeshService port targets it, or its server does not listen there", pc.Node, req.Port)
			}
			rep.InboundListener = wire.ServerListenerName(addr)
			wr.Authority = addr
			rep.Inbound, err = w.ProxylessInbound(addr, caller, wr)
		}
		if err != nil {
			return nil, err
		}
		if m != nil {
			rep.Served = servedBy(m.Model, pod, int32(req.Port), rep.Inbound)
		}
		return rep, nil
	}
	hostPort := net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port)))
	var err error
	if pc.Flavour == string(wire.FlavourEnvoy) {
		wr.DestinationIP, wr.DestinationPort, wr.Authority = req.Host, req.Port, hostPort
		if net.ParseIP(req.Host) == nil {
			ip, ok := clusterIPOf(pc, hostPort)
			if !ok {
				return nil, fmt.Errorf("the outbound listener of proxy %s has no filter chain for %s: the service is not in the proxy's scope (its identity may not call it), or it has no cluster IP; give an address instead", pc.Node, hostPort)
			}
			wr.DestinationIP = ip
		}
		rep.Outbound, err = w.Sidecar(wr)
	} else {
		if req.Scheme == "tcp" {
			return nil, errors.New("a proxyless gRPC client makes gRPC calls only: use grpc://")
		}
		wr.Target, wr.Authority = hostPort, hostPort
		rep.Outbound, err = w.Proxyless(wr)
	}
	if err != nil {
		return nil, err
	}
	if m == nil {
		return rep, nil
	}
	rep.Service, rep.Policy = policyOf(m.Model, rep.Outbound, pc.Acknowledged)
	return rep, nil
}

// serverAddress finds the address of the server Listener a proxyless pod
// was sent for a port.
func serverAddress(pc *ProxyConfig, port uint32) (string, bool) {
	for _, res := range pc.Walkable().Listeners {
		addr, ok := strings.CutPrefix(res.GetName(), wire.ServerListenerPrefix)
		if !ok {
			continue
		}
		if _, p, err := net.SplitHostPort(addr); err == nil && p == strconv.Itoa(int(port)) {
			return addr, true
		}
	}
	return "", false
}

// clusterIPOf finds the address a sidecar's outbound filter chain for
// host:port matches (its first cluster IP).
func clusterIPOf(pc *ProxyConfig, hostPort string) (string, bool) {
	var lis *listenerv3.Listener
	for _, l := range pc.Walkable().Listeners {
		if l.GetName() == translate.OutboundListener {
			lis = l
		}
	}
	for _, fc := range lis.GetFilterChains() {
		if fc.GetName() != hostPort {
			continue
		}
		for _, pr := range fc.GetFilterChainMatch().GetPrefixRanges() {
			return pr.GetAddressPrefix(), true
		}
	}
	return "", false
}

// policyOf names the MeshService behind a walk's clusters and the
// TrafficPolicy in force on its port, with the spec.http route that made
// the matched route.
func policyOf(m *mesh.Model, res *walk.Result, acked map[string]int64) (string, *PolicyInForce) {
	if len(res.Clusters) == 0 {
		return "", nil
	}
	// outbound|<port>|<subset>|<host>
	parts := strings.SplitN(res.Clusters[0].Name, "|", 4)
	if len(parts) != 4 || parts[0] != "outbound" {
		return "", nil
	}
	port, err := strconv.ParseInt(parts[1], 10, 32)
	if err != nil {
		return "", nil
	}
	for _, key := range m.Order {
		s := m.Services[key]
		if s.Host != parts[3] {
			continue
		}
		pol := s.PolicyFor(int32(port))
		if pol == nil {
			return key, nil
		}
		out := &PolicyInForce{Namespace: s.Namespace, Name: pol.Name, Generation: pol.Generation, Route: -1,
			Acknowledged: acked[mesh.Ref{Kind: mesh.KindTrafficPolicy, Namespace: s.Namespace, Name: pol.Name}.String()]}
		if !res.TCP {
			// Each spec.http route makes one route per match, in order;
			// the catch-all route comes last.
			i := 0
			for h, rt := range pol.Spec.HTTP {
				n := max(1, len(rt.Matches))
				if res.RouteIndex < i+n {
					out.Route, out.RouteName = h, rt.Name
					break
				}
				i += n
			}
		}
		return key, out
	}
	return "", nil
}

// servedBy names the MeshService whose port a request into a pod reaches,
// the PeerAuthentications that set the port's mode, and the allow rule
// that let the caller in.
func servedBy(m *mesh.Model, pod string, port int32, in *walk.Inbound) *ServedBy {
	for _, key := range m.Order {
		s := m.Services[key]
		for _, p := range s.Ports {
			for e := range s.PodEndpoints() {
				if n, ok := e.PortOf(p); !ok || n != port || e.Pod != pod {
					continue
				}
				out := &ServedBy{Namespace: s.Namespace, Name: s.Name, Generation: s.Generation, Rule: -1, DefaultInbound: s.DefaultInbound,
					HasRules: len(s.Allow) > 0, Mode: string(e.ModeFor(port))}
				for _, r := range e.ModeBy {
					if r.Kind != "" {
						out.ModeBy = append(out.ModeBy, r)
					}
				}
				if i, ok := strings.CutPrefix(in.Policy, "allow-"); ok {
					out.Rule, _ = strconv.Atoi(i)
				}
				return out
			}
		}
	}
	return nil
}

// WriteTrace prints a trace.
func WriteTrace(out io.Writer, rep *TraceReport) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	req := rep.Request
	fmt.Fprintf(w, "Proxy:\t%s (%s)\n", rep.Proxy, rep.Flavour)
	target := net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port)))
	line := strings.TrimSpace(req.Method + " " + req.Scheme + "://" + target + req.Path)
	var hs []string
	for k, v := range req.Headers {
		hs = append(hs, k+": "+v)
	}
	slices.Sort(hs)
	if len(hs) > 0 {
		line += "  [" + strings.Join(hs, ", ") + "]"
	}
	fmt.Fprintf(w, "Request:\t%s\n", line)
	if req.Inbound {
		who := "a plain-text caller (no mTLS)"
		if req.From != "" {
			who = req.From + " (mTLS)"
			if rep.Caller != "" {
				who = rep.Caller + " (mTLS)"
			}
		}
		fmt.Fprintf(w, "From:\t%s\n", who)
		in := rep.Inbound
		fmt.Fprintf(w, "Listener:\t%s\n", rep.InboundListener)
		fmt.Fprintf(w, "Filter chain:\t%s\n", in.FilterChain)
		if s := rep.Served; s != nil {
			fmt.Fprintf(w, "Serves:\tMeshService %s/%s (generation %d), port mode %s", s.Namespace, s.Name, s.Generation, s.Mode)
			if len(s.ModeBy) > 0 {
				var by []string
				for _, r := range s.ModeBy {
					by = append(by, r.Kind+" "+r.Namespace+"/"+r.Name)
				}
				fmt.Fprintf(w, " (set by %s)", strings.Join(by, ", "))
			}
			fmt.Fprintln(w)
		}
		if in.Allowed {
			decision := "ALLOWED"
			switch {
			case rep.Served != nil && rep.Served.Rule >= 0:
				decision += fmt.Sprintf(" by spec.allow[%d] of MeshService %s/%s", rep.Served.Rule, rep.Served.Namespace, rep.Served.Name)
			case in.Policy != "":
				decision += " by the allow rule " + in.Policy
			case rep.Served != nil && !rep.Served.HasRules:
				decision += " by the default inbound policy (" + string(rep.Served.DefaultInbound) + "): the MeshService has no allow rules"
			default:
				decision += ": the port has no allow rules"
			}
			fmt.Fprintf(w, "Decision:\t%s\n", decision)
			if in.Path != "" {
				fmt.Fprintf(w, "Path seen:\t%s\n", in.Path)
			}
			if in.Cluster != "" {
				fmt.Fprintf(w, "Cluster:\t%s (the application, over loopback)\n", in.Cluster)
			} else {
				fmt.Fprintf(w, "Handled by:\tthe gRPC server itself\n")
			}
		} else {
			fmt.Fprintf(w, "Decision:\tDENIED: %s\n", in.Refused)
		}
		if rep.Note != "" {
			fmt.Fprintf(w, "Note:\t%s\n", rep.Note)
		}
		return w.Flush()
	}
	res := rep.Outbound
	fmt.Fprintf(w, "Listener:\t%s\n", res.Listener)
	if res.FilterChain != "" {
		fmt.Fprintf(w, "Filter chain:\t%s\n", res.FilterChain)
	}
	if res.TCP {
		fmt.Fprintf(w, "Proxy:\tTCP (no HTTP routing)\n")
	} else {
		fmt.Fprintf(w, "Route config:\t%s\n", res.RouteConfig)
		fmt.Fprintf(w, "Virtual host:\t%s\n", res.VirtualHost)
		name := res.Route
		if name == "" {
			name = "(unnamed)"
		}
		fmt.Fprintf(w, "Route:\t#%d %s\n", res.RouteIndex, name)
		for _, s := range routeSettings(res) {
			fmt.Fprintf(w, "\t%s\n", s)
		}
	}
	if p := rep.Policy; p != nil {
		from := "its defaults (no spec.http route matched)"
		if p.Route >= 0 {
			from = fmt.Sprintf("spec.http[%d]", p.Route)
			if p.RouteName != "" {
				from += " " + strconv.Quote(p.RouteName)
			}
		}
		ack := "the proxy has not acknowledged configuration made from it"
		switch {
		case p.Acknowledged == p.Generation:
			ack = "acknowledged by the proxy"
		case p.Acknowledged != 0:
			ack = fmt.Sprintf("the proxy acknowledged generation %d", p.Acknowledged)
		}
		fmt.Fprintf(w, "Policy:\tTrafficPolicy %s/%s (generation %d, %s): %s\n", p.Namespace, p.Name, p.Generation, ack, from)
	} else if rep.Service != "" {
		fmt.Fprintf(w, "Policy:\tnone on this port of MeshService %s: every call to every endpoint, the proxy's defaults\n", rep.Service)
	}
	if rep.Note != "" {
		fmt.Fprintf(w, "Note:\t%s\n", rep.Note)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "Clusters:")
	var total uint32
	for _, c := range res.Clusters {
		total += c.Weight
	}
	for _, c := range res.Clusters {
		share := ""
		if len(res.Clusters) > 1 && total > 0 {
			share = fmt.Sprintf(" (%.0f%%)", 100*float64(c.Weight)/float64(total))
		}
		fmt.Fprintf(out, "  %s  weight %d%s\n", c.Name, c.Weight, share)
		eps := "none"
		if len(c.Endpoints) > 0 {
			eps = strings.Join(c.Endpoints, ", ")
		}
		fmt.Fprintf(out, "    endpoints: %s\n", eps)
		for i, f := range c.Failover {
			fmt.Fprintf(out, "    failover %d: %s\n", i+1, strings.Join(f, ", "))
		}
		switch {
		case c.TLSError != nil:
			fmt.Fprintf(out, "    tls: unreadable: %v\n", c.TLSError)
		case c.TLS != nil:
			fmt.Fprintf(out, "    tls: mTLS, accepts %s; certificate %s, roots %s\n", strings.Join(c.TLS.SANs, " or "), c.TLS.Certificate, c.TLS.Roots)
		default:
			fmt.Fprintf(out, "    tls: none (plain text)\n")
		}
		for _, s := range clusterSettings(c) {
			fmt.Fprintf(out, "    %s\n", s)
		}
	}
	return nil
}

// routeSettings describes what a route does beyond choosing clusters.
func routeSettings(res *walk.Result) []string {
	var out []string
	a := res.Action
	if d := a.GetTimeout(); d != nil {
		out = append(out, "timeout "+d.AsDuration().String())
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		s := fmt.Sprintf("retries %d on %s", rp.GetNumRetries().GetValue(), rp.GetRetryOn())
		if pt := rp.GetPerTryTimeout(); pt != nil {
			s += ", per try " + pt.AsDuration().String()
		}
		out = append(out, s)
	}
	for _, h := range a.GetHashPolicy() {
		if hd := h.GetHeader(); hd != nil {
			out = append(out, "hash on header "+hd.GetHeaderName())
		} else if c := h.GetCookie(); c != nil {
			out = append(out, "hash on cookie "+c.GetName())
		}
	}
	for _, mp := range a.GetRequestMirrorPolicies() {
		out = append(out, fmt.Sprintf("mirror to %s (%d%%)", mp.GetCluster(), mp.GetRuntimeFraction().GetDefaultValue().GetNumerator()))
	}
	if f := res.Fault; f != nil {
		if ab := f.GetAbort(); ab != nil {
			code := fmt.Sprintf("HTTP %d", ab.GetHttpStatus())
			if ab.GetGrpcStatus() != 0 {
				code = fmt.Sprintf("gRPC status %d", ab.GetGrpcStatus())
			}
			out = append(out, fmt.Sprintf("fault: abort %d%% with %s", ab.GetPercentage().GetNumerator(), code))
		}
		if dl := f.GetDelay(); dl != nil {
			out = append(out, fmt.Sprintf("fault: delay %d%% by %s", dl.GetPercentage().GetNumerator(), dl.GetFixedDelay().AsDuration()))
		}
	}
	return out
}

// clusterSettings describes a cluster's load balancing and limits.
func clusterSettings(c walk.Cluster) []string {
	cfg := c.Config
	if cfg == nil {
		return []string{"(cluster not sent)"}
	}
	out := []string{"load balancing " + strings.ToLower(cfg.GetLbPolicy().String())}
	for _, t := range cfg.GetCircuitBreakers().GetThresholds() {
		var lim []string
		if v := t.GetMaxConnections(); v != nil {
			lim = append(lim, fmt.Sprintf("connections %d", v.GetValue()))
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			lim = append(lim, fmt.Sprintf("pending %d", v.GetValue()))
		}
		if v := t.GetMaxRequests(); v != nil {
			lim = append(lim, fmt.Sprintf("requests %d", v.GetValue()))
		}
		if v := t.GetMaxRetries(); v != nil {
			lim = append(lim, fmt.Sprintf("retries %d", v.GetValue()))
		}
		if len(lim) > 0 {
			out = append(out, "limits: "+strings.Join(lim, ", "))
		}
	}
	if od := cfg.GetOutlierDetection(); od != nil {
		s := "outlier detection"
		if v := od.GetFailurePercentageThreshold(); v != nil {
			s += fmt.Sprintf(": eject at %d%% failures", v.GetValue())
		}
		if v := od.GetConsecutive_5Xx(); v != nil {
			s += fmt.Sprintf(", after %d consecutive 5xx", v.GetValue())
		}
		out = append(out, s)
	}
	return out
}

// TraceOptions say where weft trace reads from.
type TraceOptions struct {
	// Addr is the xDS server's client status address.
	Addr string
	// Pod and Namespace name the pod whose proxy is walked.
	Pod, Namespace string
	// Objects, when set, is where the mesh's objects are read to name the
	// TrafficPolicy and MeshService that shaped what was found;
	// Controller locates the controller's settings.
	Objects    client.Reader
	Controller Controller
}

// TraceProxy fetches a pod's proxy configuration and the mesh's objects
// and follows a request through it.
func TraceProxy(ctx context.Context, o TraceOptions, req TraceRequest) (*TraceReport, error) {
	c, err := FetchProxy(ctx, o.Addr, wire.NodeID(o.Pod, o.Namespace))
	if err != nil {
		return nil, err
	}
	pc, err := ParseProxyConfig(c)
	if err != nil {
		return nil, err
	}
	var m *Mesh
	var note string
	if o.Objects != nil {
		if m, err = LoadMesh(ctx, o.Objects, o.Controller); err != nil {
			note = "the objects that shaped this are not named: " + err.Error()
		}
	}
	rep, err := Trace(pc, req, m, mesh.Key(o.Namespace, o.Pod))
	if err != nil {
		return nil, err
	}
	rep.Note = note
	return rep, nil
}
