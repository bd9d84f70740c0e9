// Package v1alpha1 holds weft's API: MeshService, TrafficPolicy and
// PeerAuthentication in the group mesh.weft.dev.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.weft.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every weft kind.
	GroupVersion = schema.GroupVersion{Group: "mesh.weft.dev", Version: "v1alpha1"}

	// SchemeBuilder registers weft's kinds with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds weft's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers each kind and its list. The package imports only
// apimachinery, so that importing weft's API pulls in no controller code.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MeshService{}, &MeshServiceList{},
		&TrafficPolicy{}, &TrafficPolicyList{},
		&PeerAuthentication{}, &PeerAuthenticationList{},
		&MeshTrust{}, &MeshTrustList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
