// Package v1alpha1 holds weft's API: MeshService, TrafficPolicy and
// PeerAuthentication in the group mesh.weft.dev.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.weft.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every weft kind.
	GroupVersion = schema.GroupVersion{Group: "mesh.weft.dev", Version: "v1alpha1"}

	// SchemeBuilder registers weft's kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds weft's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
