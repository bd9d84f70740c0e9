package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// WebhookPath is where the API server sends pods to inject.
const WebhookPath = "/inject-pod"

// Webhook is the mutating admission handler for pods. It holds no state
// between requests: whether a pod is injected depends only on the pod,
// its namespace's labels and the config.
type Webhook struct {
	// Namespaces reads namespace labels (the manager's cache).
	Namespaces client.Reader
	Decoder    admission.Decoder
	Config     Config
}

var _ admission.Handler = (*Webhook)(nil)

// Handle injects a pod, or lets it through unchanged with the reason as a
// warning, or refuses it when its weft annotations are invalid or it
// already uses a name injection adds.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := w.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err))
	}
	ns := &corev1.Namespace{}
	if err := w.Namespaces.Get(ctx, client.ObjectKey{Name: req.Namespace}, ns); err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading namespace %s: %w", req.Namespace, err))
	}
	log := logf.FromContext(ctx).WithValues("namespace", req.Namespace, "pod", podName(pod))
	d := Decide(pod, req.Namespace, ns.Labels, w.Config)
	if !d.Inject {
		log.V(1).Info("Not injecting the pod", "reason", d.Reason)
		return admission.Allowed(d.Reason).WithWarnings("weft: not injected: " + d.Reason)
	}
	if err := Inject(pod, w.Config); err != nil {
		log.Info("Refusing a pod weft cannot inject", "reason", err.Error())
		return admission.Denied(err.Error())
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	log.V(1).Info("Injecting the pod", "flavour", pod.Annotations[AnnotationInjected])
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}
