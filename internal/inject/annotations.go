package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/weftmesh/weft/internal/redirect"
	"github.com/weftmesh/weft/internal/wire"
)

// podOptions are a pod's weft annotations, parsed.
type podOptions struct {
	flavour              wire.Flavour
	excludeInboundPorts  []uint16
	excludeOutboundPorts []uint16
	excludeOutboundCIDRs []netip.Prefix
	proxyImage           string
	resources            corev1.ResourceRequirements
}

// quote quotes an annotation's value for an error, its first 64
// characters at most: a refusal (and the log line that records it) stays
// short whatever a pod holds.
func quote(v string) string {
	const most = 64
	if r := []rune(v); len(r) > most {
		return fmt.Sprintf("%q… (%d characters more)", string(r[:most]), len(r)-most)
	}
	return strconv.Quote(v)
}

// parseAnnotations reads a pod's weft annotations over the config's
// defaults. Every error names its annotation; all errors are returned at
// once.
func parseAnnotations(ann map[string]string, cfg Config) (podOptions, error) {
	o := podOptions{flavour: wire.FlavourEnvoy, proxyImage: cfg.ProxyImage, resources: *cfg.ProxyResources.DeepCopy()}
	var errs []error
	bad := func(key string, err error) { errs = append(errs, fmt.Errorf("annotation %s: %w", key, err)) }

	switch v, ok := ann[AnnotationProxy]; {
	case !ok || v == string(wire.FlavourEnvoy):
	case v == string(wire.FlavourGRPC):
		o.flavour = wire.FlavourGRPC
	default:
		bad(AnnotationProxy, fmt.Errorf("%s is not %q or %q", quote(v), wire.FlavourEnvoy, wire.FlavourGRPC))
	}
	var err error
	if o.excludeInboundPorts, err = redirect.ParsePorts(ann[AnnotationExcludeInboundPorts]); err != nil {
		bad(AnnotationExcludeInboundPorts, err)
	}
	if o.excludeOutboundPorts, err = redirect.ParsePorts(ann[AnnotationExcludeOutboundPorts]); err != nil {
		bad(AnnotationExcludeOutboundPorts, err)
	}
	if o.excludeOutboundCIDRs, err = redirect.ParseCIDRs(ann[AnnotationExcludeOutboundCIDRs]); err != nil {
		bad(AnnotationExcludeOutboundCIDRs, err)
	}
	if v, ok := ann[AnnotationProxyImage]; ok {
		switch {
		case v == "":
			bad(AnnotationProxyImage, errors.New("must not be empty"))
		case strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
			bad(AnnotationProxyImage, fmt.Errorf("%s is not an image reference: it holds a space or a control character", quote(v)))
		}
		o.proxyImage = v
	}
	for _, r := range []struct {
		key  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationProxyCPURequest, &o.resources.Requests, corev1.ResourceCPU},
		{AnnotationProxyMemoryRequest, &o.resources.Requests, corev1.ResourceMemory},
		{AnnotationProxyCPULimit, &o.resources.Limits, corev1.ResourceCPU},
		{AnnotationProxyMemoryLimit, &o.resources.Limits, corev1.ResourceMemory},
	} {
		v, ok := ann[r.key]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			bad(r.key, fmt.Errorf("%s is not a positive quantity", quote(v)))
			continue
		}
		if *r.list == nil {
			*r.list = corev1.ResourceList{}
		}
		(*r.list)[r.name] = q
	}
	for _, r := range []struct {
		name       corev1.ResourceName
		req, limit string
	}{{corev1.ResourceCPU, AnnotationProxyCPURequest, AnnotationProxyCPULimit}, {corev1.ResourceMemory, AnnotationProxyMemoryRequest, AnnotationProxyMemoryLimit}} {
		req, hasReq := o.resources.Requests[r.name]
		lim, hasLim := o.resources.Limits[r.name]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("annotations %s and %s (or their defaults): the proxy's %s request %s exceeds its limit %s",
				r.req, r.limit, r.name, req.String(), lim.String()))
		}
	}
	return o, errors.Join(errs...)
}
