package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshServiceSpec puts a Kubernetes Service into the mesh.
// +kubebuilder:validation:XValidation:rule="!has(self.allow) || self.allow.all(r, !has(r.paths) && !has(r.methods) || self.ports.exists(p, p.protocol != 'tcp' && (!has(r.ports) || p.port in r.ports)))",message="allow: a rule with paths or methods needs at least one http, http2 or grpc port among the ports it applies to",fieldPath=".allow"
// +kubebuilder:validation:XValidation:rule="!has(self.allow) || self.allow.all(r, !has(r.ports) || r.ports.all(rp, self.ports.exists(p, p.port == rp)))",message="allow[].ports: every port must be one of spec.ports",fieldPath=".allow"
type MeshServiceSpec struct {
	// serviceName is the name of the Kubernetes Service, in the same
	// namespace, whose endpoints make up this MeshService. It cannot be
	// changed after creation.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="serviceName is immutable"
	ServiceName string `json:"serviceName"`

	// ports lists the Service ports that the mesh carries, with the protocol
	// each speaks. Each port must be one of the Service's ports. Ports of the
	// Service that are not listed pass through the proxies as opaque TCP.
	// +required
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(p, !has(p.name) || self.exists_one(q, has(q.name) && q.name == p.name))",message="ports[].name: port names must be unique"
	Ports []MeshServicePort `json:"ports"`

	// subsets name groups of the Service's endpoints by pod labels, for
	// example {name: v2, labels: {version: v2}}. TrafficPolicy routes send
	// traffic to subsets by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Subsets []Subset `json:"subsets,omitempty"`

	// allow says who may call this service. When allow is empty, every
	// workload in the mesh may call it. When it has rules, a request is let
	// through only if at least one rule matches it; every other request is
	// refused (HTTP 403, gRPC PERMISSION_DENIED, or a closed TCP connection).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Allow []AllowRule `json:"allow,omitempty"`
}

// MeshServicePort is one port of the Service, as the mesh sees it.
type MeshServicePort struct {
	// port is the Service port number (spec.ports[].port of the Service, not
	// the target port).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// name is an optional name for the port, used in status and logs.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// protocol is what the port speaks: http, http2, grpc or tcp. Routing,
	// retries, faults and path rules need http, http2 or grpc. Default: tcp.
	// +optional
	// +kubebuilder:default=tcp
	Protocol Protocol `json:"protocol,omitempty"`
}

// Subset is a named group of a service's endpoints.
type Subset struct {
	// name names the subset in TrafficPolicy backends, for example "v2" or
	// "canary". A DNS label.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// labels select the subset's pods: an endpoint belongs to the subset
	// when its pod has every one of these labels.
	// +required
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317 && self[k].size() <= 63)",message="labels: keys must be at most 317 characters and values at most 63"
	Labels map[string]string `json:"labels"`
}

// AllowRule lets some callers in. A rule matches a request when one of its
// sources matches the caller and, when set, its ports, paths and methods
// match the request.
type AllowRule struct {
	// from lists the callers this rule lets in; any one is enough.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	From []Source `json:"from"`

	// ports limits the rule to these ports of spec.ports. Default: all ports.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`

	// paths limits the rule to requests whose path matches one of these.
	// Applies to http, http2 and grpc ports only. Default: every path.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Paths []PathMatch `json:"paths,omitempty"`

	// methods limits the rule to these HTTP methods. Applies to http, http2
	// and grpc ports only (gRPC calls are POST). Default: every method.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=9
	Methods []HTTPMethod `json:"methods,omitempty"`
}

// Source is a caller, known by the identity in its mTLS certificate.
// +kubebuilder:validation:XValidation:rule="has(self.identity) != has(self.namespace)",message="from[]: set exactly one of identity or namespace"
// +kubebuilder:validation:XValidation:rule="!has(self.serviceAccount) || has(self.namespace)",message="from[].serviceAccount: requires namespace",fieldPath=".serviceAccount"
// +kubebuilder:validation:XValidation:rule="!has(self.serviceAccount) || !has(self.namespace) || self.namespace != '*'",message="from[].serviceAccount: cannot narrow namespace \"*\" (a ServiceAccount of that name in every namespace would let in whoever can create one anywhere); name its namespace",fieldPath=".serviceAccount"
type Source struct {
	// identity is a caller's full SPIFFE ID, for example
	// "spiffe://cluster.local/ns/shop/sa/checkout". Conflicts with namespace.
	// +optional
	// +kubebuilder:validation:MinLength=10
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^spiffe://[a-z0-9.\-]+(/[A-Za-z0-9._\-]+)+$`
	Identity string `json:"identity,omitempty"`

	// namespace lets in every workload of this namespace, or "*" for every
	// namespace in the mesh. Conflicts with identity.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$`
	Namespace string `json:"namespace,omitempty"`

	// serviceAccount narrows namespace to the workloads that run as this
	// service account. Requires namespace.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// MeshServiceStatus is what weft observed about a MeshService.
type MeshServiceStatus struct {
	Status `json:",inline"`

	// endpoints counts the Service's endpoints.
	// +optional
	Endpoints EndpointCounts `json:"endpoints,omitzero"`

	// proxies counts the proxies that route to this service and how many of
	// them have acknowledged its current configuration.
	// +optional
	Proxies ProxyCounts `json:"proxies,omitzero"`
}

// EndpointCounts counts endpoints by readiness. Its counts are written
// even when zero: a server-side apply of an empty object would leave
// status.endpoints null, which the schema refuses.
type EndpointCounts struct {
	// ready is the number of endpoints that are ready to take traffic.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Ready int32 `json:"ready"`

	// total is the number of endpoints, ready or not (terminating endpoints
	// included while they drain).
	// +optional
	// +kubebuilder:validation:Minimum=0
	Total int32 `json:"total"`
}

// ProxyCounts counts proxies by configuration state. Its counts are
// written even when zero (see EndpointCounts).
type ProxyCounts struct {
	// total is the number of connected proxies that this resource affects.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Total int32 `json:"total"`

	// synced is the number of those proxies that acknowledged configuration
	// that includes the current generation.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Synced int32 `json:"synced"`
}

// MeshService puts a Kubernetes Service into the mesh: its ports and
// protocols, its named subsets, and who may call it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=msvc;meshsvc,categories=weft
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.serviceName`
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.spec.ports[*].port`
// +kubebuilder:printcolumn:name="Endpoints",type=integer,JSONPath=`.status.endpoints.ready`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`,priority=1
// +kubebuilder:printcolumn:name="Resolved",type=string,JSONPath=`.status.conditions[?(@.type=="ResolvedRefs")].status`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshService struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user wants.
	// +required
	Spec MeshServiceSpec `json:"spec"`

	// status is what weft observed.
	// +optional
	Status MeshServiceStatus `json:"status,omitzero"`
}

// MeshServiceList is a list of MeshServices.
// +kubebuilder:object:root=true
type MeshServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshService `json:"items"`
}
