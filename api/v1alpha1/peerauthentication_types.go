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
	// +kubebuilder:validation:XValidation:rule="has(self.matchLabels) && size(self.matchLabels) > 0 || has(self.matchExpressions) && size(self.matchExpressions) > 0",message="selector: must not be empty; leave selector unset to cover the whole namespace"
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

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
