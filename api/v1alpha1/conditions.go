package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Condition types shared by every weft kind. Each condition has exactly one
// writer: the kind's reconciler writes Accepted, ResolvedRefs and Stalled;
// the readiness writer writes Ready from what the proxies acknowledged.
const (
	// ConditionAccepted says whether the spec is valid and applicable as a
	// whole (it may still reference things that do not exist yet).
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs says whether every object the spec names exists
	// and fits (Service, ports, MeshService, subsets).
	ConditionResolvedRefs = "ResolvedRefs"
	// ConditionReady says whether every proxy affected by the resource runs
	// configuration that includes its current generation.
	ConditionReady = "Ready"
	// ConditionStalled is True when weft cannot make progress until somebody
	// changes something (kstatus reads it as Failed).
	ConditionStalled = "Stalled"
	// ConditionHonoured (TrafficPolicy) says whether every connected proxy
	// the policy shapes acts on every field it sets: False, naming the
	// fields, the proxy flavour and how many of its proxies, when some
	// flavour ignores fields it is sent (docs/traffic.md lists them).
	ConditionHonoured = "Honoured"
	// ConditionRulesEnforced (MeshService) says whether its allow rules
	// hold as written: False when endpoints are not STRICT (the rules then
	// refuse every caller there) or a pod port serves another MeshService
	// with other rules (the port then refuses every caller). It is not a
	// failure of the resource: Ready and Stalled do not follow it.
	ConditionRulesEnforced = "RulesEnforced"
)

// Condition reasons. A reason says what happened in one CamelCase word; the
// condition's message says what to do about it.
const (
	// ReasonAccepted: the spec is valid (ResolvedRefs and Ready say whether it
	// is in force).
	ReasonAccepted = "Accepted"
	// ReasonInvalid: the spec passed admission but cannot be applied (for
	// example a regular expression that does not compile).
	ReasonInvalid = "Invalid"
	// ReasonConflicted: another resource of the same kind already claims the
	// same target; the older one wins.
	ReasonConflicted = "Conflicted"
	// ReasonTargetNotFound: the targeted MeshService does not exist.
	ReasonTargetNotFound = "TargetNotFound"

	// ReasonResolvedRefs: every reference resolved.
	ReasonResolvedRefs = "ResolvedRefs"
	// ReasonServiceNotFound: the Service a MeshService names does not exist.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonPortNotFound: a port is not one of the Service's ports.
	ReasonPortNotFound = "PortNotFound"
	// ReasonSubsetNotFound: a subset is not defined by the target MeshService.
	ReasonSubsetNotFound = "SubsetNotFound"
	// ReasonProtocolMismatch: an HTTP feature was applied to a TCP port.
	ReasonProtocolMismatch = "ProtocolMismatch"
	// ReasonMirrorNotFound: a mirror's MeshService does not exist.
	ReasonMirrorNotFound = "MirrorNotFound"
	// ReasonRefNotInForce: a MeshService the resource names exists but is
	// not in force (its own Accepted or ResolvedRefs is False and no
	// earlier generation of it was applied): there is nothing to shape or
	// to send copies to until it is.
	ReasonRefNotInForce = "RefNotInForce"

	// ReasonSynced: every proxy the resource affects has acknowledged
	// configuration that includes its current generation (true, too, when
	// no connected proxy is affected).
	ReasonSynced = "Synced"
	// ReasonProgressing: weft is working towards the desired state (some
	// proxies have not acknowledged the current generation yet).
	ReasonProgressing = "Progressing"
	// ReasonRejected: a proxy refused the configuration made from the
	// resource; it keeps its previous configuration.
	ReasonRejected = "Rejected"
	// ReasonPlainText: a STRICT PeerAuthentication covers workloads whose
	// servers take plain text (proxyless gRPC without pod certificates).
	ReasonPlainText = "PlainText"
	// ReasonStrict, ReasonNoRules, ReasonNotStrict and ReasonRulesConflict
	// are RulesEnforced's: every endpoint takes mTLS only; the service lets
	// everyone in; some endpoints are not STRICT, so the rules refuse every
	// caller there; a pod port also serves another MeshService with other
	// rules, so it refuses every caller.
	ReasonStrict        = "Strict"
	ReasonNoRules       = "NoRules"
	ReasonNotStrict     = "NotStrict"
	ReasonRulesConflict = "RulesConflict"
	// ReasonHonoured: every connected proxy the resource shapes acts on
	// every field it sets.
	ReasonHonoured = "Honoured"
	// ReasonPartiallyHonoured: some connected proxies ignore fields they
	// are sent; the message names them.
	ReasonPartiallyHonoured = "PartiallyHonoured"
)

// Status is the part of status that every weft kind shares.
type Status struct {
	// observedGeneration is the metadata.generation that the conditions
	// describe. When it is behind metadata.generation, weft has not looked at
	// the newest spec yet.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions say whether the resource is accepted, whether its references
	// resolve, and whether the proxies run it. Types: Accepted, ResolvedRefs,
	// Ready, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
