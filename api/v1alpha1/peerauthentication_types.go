package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MTLSMode says whether a workload's proxy accepts plain-text connections.
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE;DISABLE
type MTLSMode string

const (
	// MTLSStrict accepts mTLS connections from mesh identities only.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts both mTLS and plain text, for migrating
	// workloads into the mesh.
	MTLSPermissive MTLSMode = "PERMISSIVE"
	// MTLSDisable accepts plain text only. Identity-based allow rules cannot
	// match plain-text callers.
	MTLSDisable MTLSMode = "DISABLE"
)

// PeerAuthenticationSpec sets the mTLS mode for the workloads in its scope.
// +kubebuilder:validation:XValidation:rule="has(self.mode) || has(self.portLevel)",message="spec: set mode, portLevel or both"
// +kubebuilder:validation:XValidation:rule="!has(self.portLevel) || has(self.selector)",message="portLevel: needs a selector, because ports are ports of the selected workloads",fieldPath=".portLevel"
type PeerAuthenticationSpec struct {
	// selector picks the workloads (pods, by label) that this policy covers.
	// When unset, the policy covers its whole namespace, and a policy
	// without selector in weft-system covers the whole mesh. Of the
	// policies that cover a workload, the narrowest wins: workload over
	// namespace over mesh. Two policies of the same scope that cover the
	// same workload conflict; the older wins.
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`

	// mode is STRICT, PERMISSIVE or DISABLE. When unset, the mode is
	// inherited from the next wider policy (mesh-wide default: PERMISSIVE).
	// +optional
	Mode MTLSMode `json:"mode,omitempty"`

	// portLevel overrides mode for single ports of the selected workloads
	// (container ports, not Service ports). Needs selector.
	// +optional
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MaxItems=32
	PortLevel []PortMTLS `json:"portLevel,omitempty"`
}

// WorkloadSelector picks pods by their labels: a Kubernetes label
// selector (the same fields, meaning and JSON), with bounds on its size.
// +structType=atomic
// +kubebuilder:validation:XValidation:rule="has(self.matchLabels) && size(self.matchLabels) > 0 || has(self.matchExpressions) && size(self.matchExpressions) > 0",message="selector: must not be empty; leave selector unset to cover the whole namespace"
type WorkloadSelector struct {
	// matchLabels are labels a pod must have, each with exactly this
	// value. Keys are label keys (an optional DNS-subdomain prefix and
	// "/", then a name of at most 63 characters); values are label values
	// (at most 63 characters). Admission bounds their sizes; a key or value
	// of the wrong form gives Accepted=False, Invalid.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317 && self[k].size() <= 63)",message="selector.matchLabels: keys must be at most 317 characters and values at most 63"
	MatchLabels map[string]string `json:"matchLabels,omitempty"`

	// matchExpressions are requirements a pod's labels must all meet.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []SelectorRequirement `json:"matchExpressions,omitempty"`
}

// SelectorOperator relates a label to a requirement's values.
// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
type SelectorOperator string

// SelectorRequirement is one requirement on a pod's labels.
// +kubebuilder:validation:XValidation:rule="(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)",message="matchExpressions[].values: required with In and NotIn, not allowed with Exists and DoesNotExist",fieldPath=".values"
type SelectorRequirement struct {
	// key is the label's key, for example "app" or "example.com/tier".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	Key string `json:"key"`

	// operator is In (the label has one of values), NotIn (it has none of
	// them, or is absent), Exists or DoesNotExist.
	// +required
	Operator SelectorOperator `json:"operator"`

	// values are the label values of In and NotIn; Exists and
	// DoesNotExist take none.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
	Values []string `json:"values,omitempty"`
}

// LabelSelector is the selector as Kubernetes' own type, for matching.
func (s *WorkloadSelector) LabelSelector() *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: r.Key, Operator: metav1.LabelSelectorOperator(r.Operator), Values: r.Values})
	}
	return out
}

// PortMTLS is the mTLS mode of one port.
type PortMTLS struct {
	// port is a container port of the selected workloads.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// mode is STRICT, PERMISSIVE or DISABLE for this port.
	// +required
	Mode MTLSMode `json:"mode"`
}

// PeerAuthenticationScope is how wide a PeerAuthentication reaches.
// +kubebuilder:validation:Enum=Mesh;Namespace;Workload
type PeerAuthenticationScope string

const (
	// ScopeMesh covers every meshed workload (no selector, in weft-system).
	ScopeMesh PeerAuthenticationScope = "Mesh"
	// ScopeNamespace covers every workload of one namespace (no selector).
	ScopeNamespace PeerAuthenticationScope = "Namespace"
	// ScopeWorkload covers the workloads its selector picks.
	ScopeWorkload PeerAuthenticationScope = "Workload"
)

// PeerAuthenticationStatus is what weft observed about a PeerAuthentication.
type PeerAuthenticationStatus struct {
	Status `json:",inline"`

	// scope is how wide the policy reaches: Mesh, Namespace or Workload.
	// +optional
	Scope PeerAuthenticationScope `json:"scope,omitempty"`

	// workloads is the number of pods the policy covers.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Workloads int32 `json:"workloads,omitempty"`
}

// PeerAuthentication sets mTLS to STRICT, PERMISSIVE or DISABLE for the
// whole mesh (in weft-system), a namespace, or selected workloads and ports.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=peerauth;pa,categories=weft
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Scope",type=string,JSONPath=`.status.scope`
// +kubebuilder:printcolumn:name="Workloads",type=integer,JSONPath=`.status.workloads`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PeerAuthentication struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user wants.
	// +required
	Spec PeerAuthenticationSpec `json:"spec"`

	// status is what weft observed.
	// +optional
	Status PeerAuthenticationStatus `json:"status,omitzero"`
}

// PeerAuthenticationList is a list of PeerAuthentications.
// +kubebuilder:object:root=true
type PeerAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PeerAuthentication `json:"items"`
}
