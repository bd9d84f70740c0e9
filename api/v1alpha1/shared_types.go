package v1alpha1

// Duration is a length of time written as one to four number-unit pairs,
// for example "250ms", "5s", "1m30s" or "2h". Units: h, m, s, ms.
// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(h|m|s|ms)){1,4}$`
// +kubebuilder:validation:MaxLength=24
type Duration string

// Percentage is a whole number of percent, from 0 to 100.
// +kubebuilder:validation:Minimum=0
// +kubebuilder:validation:Maximum=100
type Percentage int32

// Protocol is the application protocol that a port speaks.
// +kubebuilder:validation:Enum=http;http2;grpc;tcp
type Protocol string

const (
	// ProtocolHTTP is HTTP/1.1 (and HTTP/2 when both ends offer it).
	ProtocolHTTP Protocol = "http"
	// ProtocolHTTP2 is HTTP/2 in clear text or inside mTLS.
	ProtocolHTTP2 Protocol = "http2"
	// ProtocolGRPC is gRPC, which is HTTP/2 with gRPC status codes.
	ProtocolGRPC Protocol = "grpc"
	// ProtocolTCP is opaque TCP: weft balances connections, not requests.
	ProtocolTCP Protocol = "tcp"
)

// IsHTTP says whether request-level features (routes, retries, faults,
// path-based allow rules) apply to the protocol.
func (p Protocol) IsHTTP() bool {
	return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC
}

// HTTPMethod is an HTTP request method.
// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;DELETE;CONNECT;OPTIONS;TRACE;PATCH
type HTTPMethod string

// MatchType says how a value is compared.
// +kubebuilder:validation:Enum=Exact;Prefix;RegularExpression
type MatchType string

const (
	// MatchExact matches the value exactly.
	MatchExact MatchType = "Exact"
	// MatchPrefix matches values that start with the given value.
	MatchPrefix MatchType = "Prefix"
	// MatchRegularExpression matches the whole value against an RE2 regular
	// expression.
	MatchRegularExpression MatchType = "RegularExpression"
)

// PathMatch matches the path of an HTTP request (for gRPC,
// "/package.Service/Method").
// +kubebuilder:validation:XValidation:rule="self.type != 'Prefix' && self.type != 'Exact' || self.value.startsWith('/')",message="value: a path must start with '/'"
type PathMatch struct {
	// type is how value is compared with the path: Exact, Prefix (a plain
	// string prefix, so "/api" also matches "/apis"), or RegularExpression
	// (RE2, matched against the whole path).
	// Default: Prefix.
	// +optional
	// +kubebuilder:default=Prefix
	Type MatchType `json:"type,omitempty"`

	// value is the path, path prefix or regular expression.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// HeaderMatchType says how a header is compared.
// +kubebuilder:validation:Enum=Exact;Prefix;RegularExpression;Present
type HeaderMatchType string

const (
	// HeaderMatchExact matches the header's value exactly.
	HeaderMatchExact HeaderMatchType = "Exact"
	// HeaderMatchPrefix matches values that start with the given value.
	HeaderMatchPrefix HeaderMatchType = "Prefix"
	// HeaderMatchRegularExpression matches the whole value against RE2.
	HeaderMatchRegularExpression HeaderMatchType = "RegularExpression"
	// HeaderMatchPresent matches when the header is present at all.
	HeaderMatchPresent HeaderMatchType = "Present"
)

// HeaderMatch matches one request header.
// +kubebuilder:validation:XValidation:rule="self.type == 'Present' ? !has(self.value) : has(self.value)",message="value: required unless type is Present, and not allowed with Present"
type HeaderMatch struct {
	// name is the header's name, compared without regard to case. Pseudo
	// headers such as ":authority" are allowed.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^:?[A-Za-z0-9!#$%&'*+\-.^_|~]+$`
	Name string `json:"name"`

	// type is how value is compared: Exact, Prefix, RegularExpression (RE2,
	// whole value) or Present (the header exists; value must be unset).
	// Default: Exact.
	// +optional
	// +kubebuilder:default=Exact
	Type HeaderMatchType `json:"type,omitempty"`

	// value is what the header is compared with.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Value *string `json:"value,omitempty"`

	// invert turns the match around: the header matches when the comparison
	// fails (or, with Present, when the header is absent). Default: false.
	// +optional
	Invert bool `json:"invert,omitempty"`
}
