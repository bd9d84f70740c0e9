package controllers

// Permissions of the parts of the controller that are not reconcilers,
// kept here so that the generated ClusterRole holds them:
//
// The xDS server checks each proxy's projected ServiceAccount token with a
// TokenReview (create), and whether the token's pod still exists (pods are
// already read by the mesh model).
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
//
// With the injector's serving certificate from the mesh CA (the default),
// the leader keeps the roots in the caBundle of the injector's
// MutatingWebhookConfiguration (internal/cabundle): it reads that one
// configuration and patches it, by name.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,resourceNames=weft-injector,verbs=get;patch
