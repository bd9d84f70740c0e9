package wire

import "strings"

// SPIFFE IDs of mesh workloads: spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
// The certificates weft issues carry one as their only URI SAN, the
// clusters check it, and the allow rules match it; this is its one home.
const (
	SPIFFEScheme = "spiffe"
	// DefaultServiceAccount is whom a pod that names none runs as.
	DefaultServiceAccount = "default"
)

// SPIFFEPath is the path of a workload's SPIFFE ID: /ns/<namespace>/sa/<service account>.
func SPIFFEPath(namespace, serviceAccount string) string {
	return "/ns/" + namespace + "/sa/" + serviceAccount
}

// SPIFFEID is a workload's SPIFFE ID.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	return SPIFFEScheme + "://" + trustDomain + SPIFFEPath(namespace, serviceAccount)
}

// SPIFFEDomainPrefix starts every SPIFFE ID of a trust domain.
func SPIFFEDomainPrefix(trustDomain string) string {
	return SPIFFEScheme + "://" + trustDomain + "/"
}

// SPIFFENamespacePrefix starts the SPIFFE ID of every ServiceAccount of a
// namespace.
func SPIFFENamespacePrefix(trustDomain, namespace string) string {
	return SPIFFEScheme + "://" + trustDomain + "/ns/" + namespace + "/sa/"
}

// ParseSPIFFEPath reads the namespace and ServiceAccount out of a SPIFFE
// ID's path; ok is false when the path is not of weft's form. It checks
// the form only: identity.ParseID checks the names too.
func ParseSPIFFEPath(path string) (namespace, serviceAccount string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if !strings.HasPrefix(path, "/") || len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return "", "", false
	}
	return parts[1], parts[3], true
}
