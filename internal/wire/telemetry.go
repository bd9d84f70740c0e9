package wire

// The mesh labels of what workloads report: the tags an Envoy sidecar puts
// on its stats (Prometheus labels on /stats/prometheus) and the resource
// attributes a proxyless workload's OpenTelemetry SDK reads from the
// environment the injector gives it. The injector writes both; the
// translator names the clusters whose names the destination tags are taken
// from; the tests read them back.

// Tags on every stat of a sidecar, with the values of its own pod: its
// namespace, service and version (from the pod's labels, see
// WorkloadService and WorkloadVersion) and SPIFFE identity. On outbound
// stats this is the source; on inbound stats, the destination.
const (
	StatTagNamespace = "weft_namespace"
	StatTagService   = "weft_service"
	StatTagVersion   = "weft_version"
	StatTagIdentity  = "weft_identity"
)

// Tags taken from the names of outbound clusters, on the stats of those
// clusters ("cluster.<name>.") and of the TCP proxies that use them
// ("tcp.<name>."): the destination's namespace, service, port and subset
// (no subset tag for the cluster of all endpoints).
const (
	StatTagDestinationNamespace = "weft_destination_namespace"
	StatTagDestinationService   = "weft_destination_service"
	StatTagDestinationPort      = "weft_destination_port"
	StatTagDestinationSubset    = "weft_destination_subset"
)

// StatTag is an Envoy tag extractor: Regex is matched against a stat's
// full name; its first capture group is cut from the name Prometheus
// shows, and its second is the tag's value.
type StatTag struct {
	Name  string
	Regex string
}

// outboundStat is the start of the name of a stat about an outbound
// cluster, "outbound|<port>|<subset>|<service>.<namespace>.svc.<domain>",
// up to its port: translate.ClusterName makes these names, and its tests
// match these expressions against the names it makes. The expressions use
// only what both RE2 (Go, where they are tested) and ECMAScript (Envoy's
// std::regex) read alike.
const outboundStat = `^(?:cluster|tcp)\.outbound\|`

// DestinationStatTags are the extractors of the destination tags.
func DestinationStatTags() []StatTag {
	return []StatTag{
		{StatTagDestinationPort, outboundStat + `(([0-9]+)\|)`},
		{StatTagDestinationSubset, outboundStat + `[0-9]+\|(([^|.]+)\|)`},
		{StatTagDestinationService, outboundStat + `[0-9]+\|[^|.]*\|(([^|.]+)\.)[^|.]+\.svc\.`},
		{StatTagDestinationNamespace, outboundStat + `[0-9]+\|[^|.]*\|[^|.]+\.(([^|.]+)\.)svc\.`},
	}
}

// WorkloadService is the service a pod says it belongs to, from its
// labels: app.kubernetes.io/name, else app (the label most manifests set
// and weft's subsets usually sit beside); empty when it says none. The
// Kubernetes Services or MeshServices selecting the pod are not known
// where this is read (the injector sees one pod, as it is created).
func WorkloadService(labels map[string]string) string {
	return firstLabel(labels, "app.kubernetes.io/name", "app")
}

// WorkloadVersion is the version a pod's labels give:
// app.kubernetes.io/version, else version; empty for none.
func WorkloadVersion(labels map[string]string) string {
	return firstLabel(labels, "app.kubernetes.io/version", "version")
}

func firstLabel(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// AttributeIdentity is the OpenTelemetry resource attribute of a proxyless
// workload's SPIFFE ID, which the injector sets in OTEL_RESOURCE_ATTRIBUTES
// beside the standard ones (service.version, k8s.namespace.name,
// k8s.pod.name).
const AttributeIdentity = "weft.identity"
