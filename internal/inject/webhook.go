package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/wire"
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
	// Events, when set, records a pod left out of the mesh (every skip
	// but an already injected pod) as a Warning Event on the object that
	// will own the pod (see skippedOn), except for a dry run.
	Events events.EventRecorder
}

var _ admission.Handler = (*Webhook)(nil)

// Handle injects a pod, or lets it through unchanged with the reason as a
// warning, or refuses it when its weft annotations are invalid or it
// already uses a name injection adds; it counts each answer in
// weft_injections_total and times it.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	resp, outcome, reason := w.handle(ctx, req)
	metrics.Injections.WithLabelValues(outcome, reason).Inc()
	metrics.InjectionDuration.WithLabelValues(outcome).Observe(metrics.Since(start))
	return resp
}

func (w *Webhook) handle(ctx context.Context, req admission.Request) (resp admission.Response, outcome, reason string) {
	pod := &corev1.Pod{}
	if err := w.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err)), metrics.OutcomeFailed, ""
	}
	ns := &corev1.Namespace{}
	if err := w.Namespaces.Get(ctx, client.ObjectKey{Name: req.Namespace}, ns); err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading namespace %s: %w", req.Namespace, err)), metrics.OutcomeFailed, ""
	}
	log := logf.FromContext(ctx).WithValues("namespace", req.Namespace, "pod", podName(pod))
	d := Decide(pod, req.Namespace, ns.Labels, w.Config)
	if !d.Inject {
		log.V(1).Info("Not injecting the pod", "reason", d.Reason)
		if regarding, what := skippedOn(pod, req.Namespace); w.Events != nil && regarding != nil && d.Meshless() && (req.DryRun == nil || !*req.DryRun) {
			w.Events.Eventf(regarding, nil, corev1.EventTypeWarning, wire.EventInjectionSkipped, "Inject",
				"%s was not injected: %s", what, d.Reason)
		}
		return admission.Allowed(d.Reason).WithWarnings("weft: not injected: " + d.Reason), metrics.OutcomeSkipped, d.Code
	}
	if err := Inject(pod, w.Config); err != nil {
		log.Info("Refusing a pod weft cannot inject", "reason", err.Error())
		code := ReasonInvalidAnnotation
		if errors.Is(err, ErrNameTaken) {
			code = ReasonNameTaken
		}
		return admission.Denied(err.Error()), metrics.OutcomeRefused, code
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err), metrics.OutcomeFailed, ""
	}
	log.V(1).Info("Injecting the pod", "flavour", pod.Annotations[AnnotationInjected])
	return admission.PatchResponseFromRaw(req.Object.Raw, raw), metrics.OutcomeInjected, ""
}

// skippedOn is what an InjectionSkipped Event is about: the pod does not
// exist yet while the webhook answers, so the Event goes to its
// controller (the ReplicaSet, Job, StatefulSet or DaemonSet named by its
// ownerReferences), where kubectl describe finds it and where repeats
// from the controller's next pods fold into one Event. A pod without a
// controller gets it under its own name (without a UID: it has none yet);
// one without a controller or a name (generateName alone) gets none.
// what names the pod in the Event's note.
func skippedOn(pod *corev1.Pod, namespace string) (runtime.Object, string) {
	if owner := metav1.GetControllerOf(pod); owner != nil {
		return &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: owner.APIVersion, Kind: owner.Kind},
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: owner.Name, UID: owner.UID},
		}, "a pod of " + owner.Kind + " " + owner.Name
	}
	if pod.Name == "" {
		return nil, ""
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: pod.Name}}, "pod " + pod.Name
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}
