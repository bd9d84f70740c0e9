package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshTrustName is the one MeshTrust: the controller writes it, nobody
// else needs to.
const MeshTrustName = "mesh"

// TrustPhase is where a rotation of the mesh's trust stands.
// +kubebuilder:validation:Enum=Steady;TrustingBoth;SigningWithNew
type TrustPhase string

const (
	// TrustSteady is one trust anchor, which the signing CA chains to.
	TrustSteady TrustPhase = "Steady"
	// TrustTrustingBoth is several anchors trusted while the signing CA
	// chains to an older one: the new anchor is trusted before anything
	// is signed under it (the first step of a rotation).
	TrustTrustingBoth TrustPhase = "TrustingBoth"
	// TrustSigningWithNew is several anchors trusted while the signing CA
	// chains to the newest: the old ones stay until every leaf they
	// signed has been renewed, then they are retired.
	TrustSigningWithNew TrustPhase = "SigningWithNew"
)

// Conditions of a MeshTrust (besides Ready).
const (
	// ConditionCAExpiring is True while a trust anchor or the signing CA
	// expires within the warning window (--trust-expiry-warning, 30 days
	// by default), or has expired.
	ConditionCAExpiring = "CAExpiring"
	// ReasonExpiresSoon: a certificate expires within the window; the
	// message names it and when.
	ReasonExpiresSoon = "ExpiresSoon"
	// ReasonExpired: a certificate has expired.
	ReasonExpired = "Expired"
	// ReasonNotExpiring: none expires within the window.
	ReasonNotExpiring = "NotExpiring"
	// ReasonWaitingForTrust (Ready=False): the bundle (and the CA, when
	// weft signs) is not loaded yet.
	ReasonWaitingForTrust = "WaitingForTrust"
	// ReasonTrustLoaded (Ready=True): the state below is what the
	// controller serves.
	ReasonTrustLoaded = "TrustLoaded"
)

// TrustedCertificate is one certificate of the mesh's trust.
type TrustedCertificate struct {
	// subject is the certificate's subject, as text.
	// +kubebuilder:validation:MaxLength=1024
	Subject string `json:"subject"`
	// serialNumber is the certificate's serial number, hexadecimal.
	// +kubebuilder:validation:MaxLength=128
	SerialNumber string `json:"serialNumber"`
	// sha256 is the SHA-256 fingerprint of the certificate (DER),
	// hexadecimal: compare it with `openssl x509 -fingerprint -sha256`.
	// +kubebuilder:validation:MaxLength=64
	SHA256 string `json:"sha256"`
	// notBefore and notAfter bound the certificate's validity.
	NotBefore metav1.Time `json:"notBefore"`
	NotAfter  metav1.Time `json:"notAfter"`
}

// MeshTrustSpec is empty: a MeshTrust is written by the controller and
// read by people, kubectl and GitOps tools.
type MeshTrustSpec struct{}

// MeshTrustStatus is the mesh's trust as the controller serves it.
type MeshTrustStatus struct {
	// source is where certificates come from: builtin (weft's root),
	// external (an intermediate weft holds, kept by cert-manager or the
	// user) or cert-manager (an issuer signs; weft holds no CA).
	// +optional
	// +kubebuilder:validation:Enum=builtin;external;cert-manager
	Source string `json:"source,omitempty"`
	// issuer is the cert-manager issuer that signs, with source
	// cert-manager: kind/name, or kind.group/name.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Issuer string `json:"issuer,omitempty"`
	// phase is where a rotation stands.
	// +optional
	Phase TrustPhase `json:"phase,omitempty"`
	// anchors are the certificates every workload trusts: the bundle the
	// meshed namespaces mount (the ConfigMap weft-root-ca).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Anchors []TrustedCertificate `json:"anchors,omitempty"`
	// anchorCount is the number of anchors, for kubectl's columns.
	// +optional
	AnchorCount int32 `json:"anchorCount,omitempty"`
	// signingCA is the CA weft signs with; unset with source
	// cert-manager, whose issuer holds its CA.
	// +optional
	SigningCA *TrustedCertificate `json:"signingCA,omitempty"`
	// nextExpiry is the soonest notAfter among the anchors and the
	// signing CA.
	// +optional
	NextExpiry *metav1.Time `json:"nextExpiry,omitempty"`
	// warningWindow is how long before an expiry CAExpiring turns True.
	// +optional
	WarningWindow *metav1.Duration `json:"warningWindow,omitempty"`
	// conditions: Ready (the trust is loaded) and CAExpiring.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MeshTrust is the mesh's trust state: the anchors every workload trusts,
// the CA that signs, their expiry and the rotation phase. There is one,
// named mesh, which the controller keeps; `kubectl get meshtrust` and
// `weft ca status` show it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=weft
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'mesh'",message="metadata.name: the one MeshTrust is named mesh"
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.status.source`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Anchors",type=integer,JSONPath=`.status.anchorCount`
// +kubebuilder:printcolumn:name="Next-Expiry",type=date,JSONPath=`.status.nextExpiry`
// +kubebuilder:printcolumn:name="Expiring",type=string,JSONPath=`.status.conditions[?(@.type=="CAExpiring")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
type MeshTrust struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec MeshTrustSpec `json:"spec,omitempty"`
	// +optional
	Status MeshTrustStatus `json:"status,omitempty"`
}

// MeshTrustList is a list of MeshTrusts.
// +kubebuilder:object:root=true
type MeshTrustList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshTrust `json:"items"`
}
