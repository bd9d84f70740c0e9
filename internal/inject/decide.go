package inject

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/internal/wire"
)

// Why a pod is not injected, or refused: the reason label of
// weft_injections_total and of the InjectionSkipped Event.
const (
	ReasonSystemNamespace   = "SystemNamespace"
	ReasonNamespaceNotMesh  = "NamespaceNotEnabled"
	ReasonOptedOut          = "OptedOut"
	ReasonHostNetwork       = "HostNetwork"
	ReasonAlreadyInjected   = "AlreadyInjected"
	ReasonInvalidAnnotation = "InvalidAnnotation"
	// ReasonNameTaken refuses a pod that already uses a container or
	// volume name, or a mount path, that injection adds.
	ReasonNameTaken = "NameTaken"
)

// Decision says whether a pod is injected, and why not when it is not.
type Decision struct {
	Inject bool
	// Code names the reason of a skip (Reason*); Reason explains it in
	// words a person can act on.
	Code, Reason string
}

// Meshless says the pod is left out of the mesh, rather than already in
// it: every skip but AlreadyInjected. Those are the skips worth an Event.
func (d Decision) Meshless() bool { return !d.Inject && d.Code != ReasonAlreadyInjected }

// check is one reason not to inject; it returns "" when it does not apply.
type check struct {
	code string
	why  func(pod *corev1.Pod, namespace string, nsLabels map[string]string, cfg Config) string
}

// checks run in order; the first that applies decides.
var checks = []check{
	{ReasonSystemNamespace, func(_ *corev1.Pod, ns string, _ map[string]string, cfg Config) string {
		if ns == "kube-system" || ns == cfg.MeshNamespace {
			return "pods in " + ns + " are never injected"
		}
		return ""
	}},
	{ReasonNamespaceNotMesh, func(_ *corev1.Pod, ns string, nsLabels map[string]string, _ Config) string {
		if nsLabels[wire.LabelInject] != wire.InjectEnabled {
			return "namespace " + ns + " does not have the label " + wire.LabelInject + "=" + wire.InjectEnabled
		}
		return ""
	}},
	{ReasonOptedOut, func(pod *corev1.Pod, _ string, _ map[string]string, _ Config) string {
		if pod.Labels[wire.LabelInject] == wire.InjectDisabled {
			return "the pod has the label " + wire.LabelInject + "=" + wire.InjectDisabled
		}
		return ""
	}},
	{ReasonHostNetwork, func(pod *corev1.Pod, _ string, _ map[string]string, _ Config) string {
		if pod.Spec.HostNetwork {
			return "the pod uses the host's network, which the proxy cannot capture"
		}
		return ""
	}},
	{ReasonAlreadyInjected, func(pod *corev1.Pod, _ string, _ map[string]string, _ Config) string {
		if pod.Annotations[AnnotationInjected] != "" || hasContainer(pod.Spec.InitContainers, ProxyContainer) || hasContainer(pod.Spec.Containers, ProxyContainer) {
			return "the pod is already injected"
		}
		return ""
	}},
}

// Decide runs the checks for a pod in a namespace with the given labels.
func Decide(pod *corev1.Pod, namespace string, nsLabels map[string]string, cfg Config) Decision {
	for _, c := range checks {
		if reason := c.why(pod, namespace, nsLabels, cfg); reason != "" {
			return Decision{Code: c.code, Reason: reason}
		}
	}
	return Decision{Inject: true}
}

func hasContainer(cs []corev1.Container, name string) bool {
	for _, c := range cs {
		if c.Name == name {
			return true
		}
	}
	return false
}
