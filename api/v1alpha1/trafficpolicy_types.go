package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficPolicySpec shapes the traffic to one MeshService.
// +kubebuilder:validation:XValidation:rule="has(self.http) || has(self.timeouts) || has(self.retries) || has(self.connectionPool) || has(self.outlierDetection) || has(self.loadBalancer) || has(self.locality) || has(self.rateLimit) || has(self.tracing)",message="spec: a TrafficPolicy must set at least one of http, timeouts, retries, connectionPool, outlierDetection, loadBalancer, locality, rateLimit or tracing"
type TrafficPolicySpec struct {
	// targetRef names the MeshService, in the same namespace, whose traffic
	// this policy shapes. At most one TrafficPolicy may target a given
	// MeshService port; when two do, the older one wins and the newer is
	// marked Accepted=False with reason Conflicted.
	// +required
	TargetRef TargetRef `json:"targetRef"`

	// http lists routes, tried in order; the first route whose matches fit a
	// request handles it. Requests that no route matches go to all of the
	// service's endpoints. Needs an http, http2 or grpc port.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(r, !has(r.name) || self.exists_one(q, has(q.name) && q.name == r.name))",message="http[].name: route names must be unique"
	HTTP []HTTPRoute `json:"http,omitempty"`

	// timeouts bound how long calls to the service may take. A route's
	// timeout overrides timeouts.request for that route.
	// +optional
	Timeouts *Timeouts `json:"timeouts,omitempty"`

	// retries retries failed requests to the service. A route's retries
	// override these for that route. Needs an http, http2 or grpc port.
	// +optional
	Retries *RetryPolicy `json:"retries,omitempty"`

	// connectionPool limits the connections and requests that each calling
	// proxy opens to the service (circuit breaking): calls over a limit fail
	// at once instead of queueing.
	// +optional
	ConnectionPool *ConnectionPool `json:"connectionPool,omitempty"`

	// outlierDetection takes endpoints that keep failing out of load
	// balancing for a while (passive health checking).
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`

	// loadBalancer chooses how calling proxies pick an endpoint.
	// Default: RoundRobin.
	// +optional
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`

	// locality prefers endpoints near the caller (same zone, then same
	// region) and fails over when too few of them are healthy.
	// +optional
	Locality *LocalityPolicy `json:"locality,omitempty"`

	// rateLimit caps the rate of requests that each of the service's own
	// proxies lets in (a local token bucket per endpoint, not a global
	// limit). Requests over the limit get HTTP 429 or gRPC UNAVAILABLE.
	// +optional
	RateLimit *LocalRateLimit `json:"rateLimit,omitempty"`

	// tracing overrides the mesh-wide trace sampling (the controller's
	// --tracing-sampling) on the routes of the ports this policy shapes.
	// It takes effect where tracing is on (--tracing-endpoint), on Envoy
	// sidecars: proxyless gRPC workloads sample as their OpenTelemetry SDK
	// is told by their environment, which the injector fills with the
	// mesh-wide sampling (the Honoured condition names this field for
	// them). Needs an http, http2 or grpc port.
	// +optional
	Tracing *Tracing `json:"tracing,omitempty"`
}

// Tracing is the trace sampling of a policy's routes.
type Tracing struct {
	// samplingPercent is the percentage of the calling sidecars' requests
	// on these routes that start a sampled trace: a decimal number from 0
	// to 100 with at most four decimal places, for example "0.5" or "25".
	// Requests that arrive as part of a sampled trace stay in it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:Pattern=`^[0-9]{1,3}(\.[0-9]{1,4})?$`
	// +kubebuilder:validation:XValidation:rule="double(self) <= 100.0",message="tracing.samplingPercent: a percentage, at most 100"
	SamplingPercent string `json:"samplingPercent"`
}

// TargetRef names the MeshService a policy attaches to.
type TargetRef struct {
	// kind is the kind of the target. Only MeshService exists today.
	// Default: MeshService.
	// +optional
	// +kubebuilder:default=MeshService
	// +kubebuilder:validation:Enum=MeshService
	Kind string `json:"kind,omitempty"`

	// name is the name of the MeshService, in the policy's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`

	// port limits the policy to one port of the MeshService. Default: every
	// port of the MeshService (HTTP features only on its HTTP ports).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`
}

// HTTPRoute sends the requests it matches to weighted backends.
// +kubebuilder:validation:XValidation:rule="self.backends.map(b, b.weight).sum() == 100",message="http[].backends: the weights of a route's backends must add up to 100",fieldPath=".backends"
// +kubebuilder:validation:XValidation:rule="self.backends.all(b, self.backends.filter(c, has(b.subset) ? (has(c.subset) && c.subset == b.subset) : !has(c.subset)).size() == 1)",message="http[].backends: each subset may appear only once in a route",fieldPath=".backends"
type HTTPRoute struct {
	// name names the route in status, metrics and logs.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// matches says which requests take this route: a request matches when
	// it fits any one of the entries. Default: every request.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Matches []HTTPMatch `json:"matches,omitempty"`

	// backends split the route's requests across the service's subsets by
	// weight, for canary and A/B releases. Weights are percentages and must
	// add up to 100.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Backends []WeightedBackend `json:"backends"`

	// timeout bounds the whole request, retries included, on this route.
	// Overrides spec.timeouts.request. "0s" means no timeout.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('1h')",message="http[].timeout: at most 1h"
	Timeout *Duration `json:"timeout,omitempty"`

	// retries overrides spec.retries for this route.
	// +optional
	Retries *RetryPolicy `json:"retries,omitempty"`

	// fault injects delays and errors into a share of the route's requests,
	// to test how callers cope.
	// +optional
	Fault *FaultInjection `json:"fault,omitempty"`

	// mirror copies a share of the route's requests to another MeshService
	// (fire and forget: its responses are dropped).
	// +optional
	Mirror *Mirror `json:"mirror,omitempty"`
}

// HTTPMatch matches a request when all of its set fields match.
// +kubebuilder:validation:XValidation:rule="has(self.path) || has(self.headers) || has(self.method)",message="http[].matches[]: set at least one of path, headers or method"
type HTTPMatch struct {
	// path matches the request path.
	// +optional
	Path *PathMatch `json:"path,omitempty"`

	// headers match request headers; all of them must match.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Headers []HeaderMatch `json:"headers,omitempty"`

	// method matches the request method.
	// +optional
	Method *HTTPMethod `json:"method,omitempty"`
}

// WeightedBackend is a share of a route's traffic.
type WeightedBackend struct {
	// subset is the name of one of the target MeshService's subsets.
	// Default: all of the service's endpoints.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Subset string `json:"subset,omitempty"`

	// weight is the percentage of the route's requests that go to this
	// backend, 0 to 100.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Weight int32 `json:"weight"`
}

// Timeouts bound the time calls take.
type Timeouts struct {
	// request bounds a whole request, retries included. "0s" means no
	// timeout. Default: 15s for http and http2 ports, none for grpc (gRPC
	// callers set deadlines themselves).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('1h')",message="timeouts.request: at most 1h"
	Request *Duration `json:"request,omitempty"`

	// connect bounds the time to open a connection to an endpoint.
	// Default: 5s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('5m')",message="timeouts.connect: between 1ms and 5m"
	Connect *Duration `json:"connect,omitempty"`

	// idle closes connections (and HTTP streams) that carried nothing for
	// this long. "0s" means never. Default: 1h.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('24h')",message="timeouts.idle: at most 24h"
	Idle *Duration `json:"idle,omitempty"`
}

// RetryCondition is a failure that may be retried.
// +kubebuilder:validation:Enum="5xx";gateway-error;reset;connect-failure;retriable-4xx;refused-stream;cancelled;deadline-exceeded;internal;resource-exhausted;unavailable
type RetryCondition string

// RetryPolicy retries failed requests.
type RetryPolicy struct {
	// attempts is the number of retries after the first try; 0 turns
	// retries off. Default: 2.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	Attempts *int32 `json:"attempts,omitempty"`

	// perTryTimeout bounds each try. Default: the route's timeout.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="retries.perTryTimeout: between 1ms and 1h"
	PerTryTimeout *Duration `json:"perTryTimeout,omitempty"`

	// retryOn lists the failures that are retried: HTTP conditions (5xx,
	// gateway-error, reset, connect-failure, retriable-4xx, refused-stream)
	// and gRPC status codes (cancelled, deadline-exceeded, internal,
	// resource-exhausted, unavailable). Default: connect-failure,
	// refused-stream, unavailable.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=11
	RetryOn []RetryCondition `json:"retryOn,omitempty"`

	// backoff spaces retries out with jittered exponential backoff.
	// +optional
	Backoff *Backoff `json:"backoff,omitempty"`

	// budget caps retries as a share of the requests in flight, so that
	// retries cannot multiply load during an outage.
	// +optional
	Budget *RetryBudget `json:"budget,omitempty"`
}

// Backoff is jittered exponential backoff between retries.
// +kubebuilder:validation:XValidation:rule="!has(self.maxInterval) || duration(self.maxInterval) >= duration(self.baseInterval)",message="backoff.maxInterval: must not be shorter than backoff.baseInterval",fieldPath=".maxInterval"
type Backoff struct {
	// baseInterval is the wait before the first retry; each later wait is
	// up to twice the one before.
	// +required
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1m')",message="backoff.baseInterval: between 1ms and 1m"
	BaseInterval Duration `json:"baseInterval"`

	// maxInterval caps the wait. Default: ten times baseInterval.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('5m')",message="backoff.maxInterval: at most 5m"
	MaxInterval *Duration `json:"maxInterval,omitempty"`
}

// RetryBudget caps concurrent retries.
type RetryBudget struct {
	// percent is the most retries in flight, as a percentage of the
	// requests in flight. Default: 20.
	// +optional
	// +kubebuilder:default=20
	Percent *Percentage `json:"percent,omitempty"`

	// minConcurrency is the number of retries in flight that are always
	// allowed, whatever percent says. Default: 3.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	MinConcurrency *int32 `json:"minConcurrency,omitempty"`
}

// ConnectionPool limits what each calling proxy may open to the service.
// +kubebuilder:validation:MinProperties=1
type ConnectionPool struct {
	// maxConnections caps TCP connections to all of the service's
	// endpoints. Default: 1024.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// maxPendingRequests caps HTTP requests waiting for a connection.
	// Default: 1024.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`

	// maxRequests caps HTTP requests in flight. Default: 1024.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxRequests *int32 `json:"maxRequests,omitempty"`

	// maxRetries caps retries in flight. Default: 3.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	MaxRetries *int32 `json:"maxRetries,omitempty"`

	// maxRequestsPerConnection closes a connection after this many
	// requests. Default: no limit.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MaxRequestsPerConnection *int32 `json:"maxRequestsPerConnection,omitempty"`
}

// OutlierDetection ejects failing endpoints for a while.
// +kubebuilder:validation:XValidation:rule="has(self.consecutive5xxErrors) || has(self.consecutiveGatewayErrors) || has(self.failurePercentage)",message="outlierDetection: set at least one of consecutive5xxErrors, consecutiveGatewayErrors or failurePercentage"
type OutlierDetection struct {
	// consecutive5xxErrors ejects an endpoint after this many 5xx responses
	// (or gRPC errors, or connection failures) in a row.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Consecutive5xxErrors *int32 `json:"consecutive5xxErrors,omitempty"`

	// consecutiveGatewayErrors ejects an endpoint after this many 502, 503
	// or 504 responses in a row.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	ConsecutiveGatewayErrors *int32 `json:"consecutiveGatewayErrors,omitempty"`

	// failurePercentage ejects endpoints whose share of failed requests in
	// an interval reaches this percentage.
	// +optional
	FailurePercentage *Percentage `json:"failurePercentage,omitempty"`

	// interval is how often endpoints are assessed. Default: 10s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('100ms') && duration(self) <= duration('1h')",message="outlierDetection.interval: between 100ms and 1h"
	Interval *Duration `json:"interval,omitempty"`

	// baseEjectionTime is how long an endpoint stays out the first time;
	// each later ejection of the same endpoint lasts longer. Default: 30s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="outlierDetection.baseEjectionTime: between 1s and 1h"
	BaseEjectionTime *Duration `json:"baseEjectionTime,omitempty"`

	// maxEjectionPercent caps the share of endpoints out at once.
	// Default: 10.
	// +optional
	// +kubebuilder:default=10
	MaxEjectionPercent *Percentage `json:"maxEjectionPercent,omitempty"`

	// minimumHosts is the fewest endpoints for which failurePercentage is
	// assessed. Default: 5.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MinimumHosts *int32 `json:"minimumHosts,omitempty"`

	// minimumRequests is the fewest requests an endpoint must have served
	// in an interval for failurePercentage to judge it: below that, its
	// failures are too few to tell. Default: 50.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MinimumRequests *int32 `json:"minimumRequests,omitempty"`
}

// FaultInjection delays or fails a share of requests.
// +kubebuilder:validation:XValidation:rule="has(self.delay) || has(self.abort)",message="fault: set delay, abort or both"
type FaultInjection struct {
	// delay holds back a share of requests before passing them on.
	// +optional
	Delay *FaultDelay `json:"delay,omitempty"`

	// abort answers a share of requests with an error instead of passing
	// them on.
	// +optional
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay is a fixed delay added to a share of requests.
type FaultDelay struct {
	// fixedDelay is the delay.
	// +required
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="fault.delay.fixedDelay: between 1ms and 1h"
	FixedDelay Duration `json:"fixedDelay"`

	// percentage is the share of requests delayed, 0 to 100.
	// +required
	Percentage Percentage `json:"percentage"`
}

// FaultAbort fails a share of requests.
// +kubebuilder:validation:XValidation:rule="has(self.httpStatus) != has(self.grpcStatus)",message="fault.abort: set exactly one of httpStatus or grpcStatus"
type FaultAbort struct {
	// httpStatus is the HTTP status returned, 200 to 599. Conflicts with
	// grpcStatus.
	// +optional
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	HTTPStatus *int32 `json:"httpStatus,omitempty"`

	// grpcStatus is the gRPC status code returned, 1 to 16 (14 is
	// UNAVAILABLE). Conflicts with httpStatus.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	GRPCStatus *int32 `json:"grpcStatus,omitempty"`

	// percentage is the share of requests failed, 0 to 100.
	// +required
	Percentage Percentage `json:"percentage"`
}

// Mirror copies requests to another MeshService.
type Mirror struct {
	// name is the MeshService, in the policy's namespace, that receives the
	// copies. It must have a port with the same number as the route's.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`

	// subset limits the copies to one of that MeshService's subsets.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Subset string `json:"subset,omitempty"`

	// percentage is the share of requests copied, 0 to 100. Default: 100.
	// +optional
	// +kubebuilder:default=100
	Percentage *Percentage `json:"percentage,omitempty"`
}

// LoadBalancerAlgorithm is how a proxy picks an endpoint.
// +kubebuilder:validation:Enum=RoundRobin;LeastRequest;RingHash;Random
type LoadBalancerAlgorithm string

const (
	// LoadBalancerRoundRobin takes endpoints in turn.
	LoadBalancerRoundRobin LoadBalancerAlgorithm = "RoundRobin"
	// LoadBalancerLeastRequest picks the less busy of two random endpoints.
	LoadBalancerLeastRequest LoadBalancerAlgorithm = "LeastRequest"
	// LoadBalancerRingHash hashes a request attribute onto a ring, so that
	// the same key keeps going to the same endpoint (session affinity).
	LoadBalancerRingHash LoadBalancerAlgorithm = "RingHash"
	// LoadBalancerRandom picks an endpoint at random.
	LoadBalancerRandom LoadBalancerAlgorithm = "Random"
)

// LoadBalancer chooses how endpoints are picked.
// +kubebuilder:validation:XValidation:rule="(self.algorithm == 'RingHash') == has(self.ringHash)",message="loadBalancer.ringHash: required when algorithm is RingHash, and only then",fieldPath=".ringHash"
type LoadBalancer struct {
	// algorithm is RoundRobin, LeastRequest, RingHash or Random.
	// Default: RoundRobin.
	// +optional
	// +kubebuilder:default=RoundRobin
	Algorithm LoadBalancerAlgorithm `json:"algorithm,omitempty"`

	// ringHash says what RingHash hashes. Required with RingHash.
	// +optional
	RingHash *RingHash `json:"ringHash,omitempty"`
}

// RingHash names the request attribute that keeps a caller on one endpoint.
// +kubebuilder:validation:XValidation:rule="[has(self.header), has(self.cookie), has(self.sourceIP) && self.sourceIP].filter(x, x).size() == 1",message="loadBalancer.ringHash: set exactly one of header, cookie or sourceIP"
type RingHash struct {
	// header hashes the value of this request header.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_|~]+$`
	Header string `json:"header,omitempty"`

	// cookie hashes an HTTP cookie, which the proxy sets when absent.
	// +optional
	Cookie *HashCookie `json:"cookie,omitempty"`

	// sourceIP hashes the caller's IP address.
	// +optional
	SourceIP bool `json:"sourceIP,omitempty"`

	// minimumRingSize is the number of points on the ring; more points
	// spread load more evenly and cost memory. Default: 1024.
	// +optional
	// +kubebuilder:validation:Minimum=64
	// +kubebuilder:validation:Maximum=8388608
	MinimumRingSize *int32 `json:"minimumRingSize,omitempty"`
}

// HashCookie is the cookie that RingHash hashes.
type HashCookie struct {
	// name is the cookie's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_|~]+$`
	Name string `json:"name"`

	// ttl is the lifetime of the cookie the proxy sets. Default: a session
	// cookie.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('8760h')",message="loadBalancer.ringHash.cookie.ttl: at most 8760h"
	TTL *Duration `json:"ttl,omitempty"`
}

// LocalityMode says which endpoints count as near.
// +kubebuilder:validation:Enum=None;PreferZone;PreferRegion
type LocalityMode string

const (
	// LocalityNone spreads load over all endpoints regardless of place.
	LocalityNone LocalityMode = "None"
	// LocalityPreferZone sends traffic to the caller's zone first, then its
	// region, then anywhere.
	LocalityPreferZone LocalityMode = "PreferZone"
	// LocalityPreferRegion sends traffic to the caller's region first, then
	// anywhere.
	LocalityPreferRegion LocalityMode = "PreferRegion"
)

// LocalityPolicy prefers nearby endpoints (by the nodes' topology.kubernetes.io
// zone and region labels).
type LocalityPolicy struct {
	// mode is None, PreferZone or PreferRegion. Default: PreferZone.
	// +optional
	// +kubebuilder:default=PreferZone
	Mode LocalityMode `json:"mode,omitempty"`

	// minHealthyPercent spills traffic over to the next locality when fewer
	// than this percentage of the nearer endpoints are healthy. Default: 70.
	// +optional
	// +kubebuilder:default=70
	MinHealthyPercent *Percentage `json:"minHealthyPercent,omitempty"`
}

// LocalRateLimit is a token bucket in each of the service's proxies.
// +kubebuilder:validation:XValidation:rule="!has(self.burst) || self.burst >= self.requests",message="rateLimit.burst: must be at least rateLimit.requests",fieldPath=".burst"
type LocalRateLimit struct {
	// requests is the number of requests let in per interval.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	Requests int32 `json:"requests"`

	// interval is the period that requests refills. Default: 1s.
	// +optional
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('50ms') && duration(self) <= duration('1h')",message="rateLimit.interval: between 50ms and 1h"
	Interval Duration `json:"interval,omitempty"`

	// burst is the bucket's size: how many requests may come at once after
	// a quiet spell. Default: requests.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	Burst *int32 `json:"burst,omitempty"`
}

// TrafficPolicyStatus is what weft observed about a TrafficPolicy.
type TrafficPolicyStatus struct {
	Status `json:",inline"`
}

// TrafficPolicy attaches to a MeshService and shapes its traffic: routes and
// weighted splits, timeouts, retries, circuit breaking, outlier detection,
// fault injection, mirroring, load balancing, locality and rate limits.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tp;trafficpol,categories=weft
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Resolved",type=string,JSONPath=`.status.conditions[?(@.type=="ResolvedRefs")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Honoured",type=string,JSONPath=`.status.conditions[?(@.type=="Honoured")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TrafficPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user wants.
	// +required
	Spec TrafficPolicySpec `json:"spec"`

	// status is what weft observed.
	// +optional
	Status TrafficPolicyStatus `json:"status,omitzero"`
}

// TrafficPolicyList is a list of TrafficPolicies.
// +kubebuilder:object:root=true
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPolicy `json:"items"`
}
