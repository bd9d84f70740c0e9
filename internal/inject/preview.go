package inject

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/wire"
)

// Preview injects the pods and pod templates in a stream of YAML
// documents (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
// Jobs, CronJobs) as the webhook would for a namespace that opted in, and
// writes the result. Other documents pass through unchanged. It is what
// "weft inject" runs.
func Preview(in io.Reader, out io.Writer, cfg Config) error {
	dec := utilyaml.NewYAMLReader(bufio.NewReader(in))
	first := true
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading YAML: %w", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		result, err := previewDoc(doc, cfg)
		if err != nil {
			return err
		}
		if !first {
			fmt.Fprintln(out, "---")
		}
		first = false
		if _, err := out.Write(result); err != nil {
			return err
		}
	}
}

func previewDoc(doc []byte, cfg Config) ([]byte, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("reading a document: %w", err)
	}
	gk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind).GroupKind()
	var obj any
	var tmpl func() (*corev1.Pod, func(*corev1.Pod))
	switch gk {
	case schema.GroupKind{Kind: "Pod"}:
		p := &corev1.Pod{}
		obj, tmpl = p, func() (*corev1.Pod, func(*corev1.Pod)) { return p, func(*corev1.Pod) {} }
	case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
		d := &appsv1.Deployment{}
		obj, tmpl = d, templateOf(&d.Spec.Template)
	case schema.GroupKind{Group: "apps", Kind: "StatefulSet"}:
		d := &appsv1.StatefulSet{}
		obj, tmpl = d, templateOf(&d.Spec.Template)
	case schema.GroupKind{Group: "apps", Kind: "DaemonSet"}:
		d := &appsv1.DaemonSet{}
		obj, tmpl = d, templateOf(&d.Spec.Template)
	case schema.GroupKind{Group: "apps", Kind: "ReplicaSet"}:
		d := &appsv1.ReplicaSet{}
		obj, tmpl = d, templateOf(&d.Spec.Template)
	case schema.GroupKind{Group: "batch", Kind: "Job"}:
		d := &batchv1.Job{}
		obj, tmpl = d, templateOf(&d.Spec.Template)
	case schema.GroupKind{Group: "batch", Kind: "CronJob"}:
		d := &batchv1.CronJob{}
		obj, tmpl = d, templateOf(&d.Spec.JobTemplate.Spec.Template)
	default:
		return doc, nil
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("reading %s: %w", tm.Kind, err)
	}
	pod, store := tmpl()
	if d := Decide(pod, "preview", map[string]string{wire.LabelInject: wire.InjectEnabled}, cfg); d.Inject {
		if err := Inject(pod, cfg); err != nil {
			return nil, err
		}
		store(pod)
	}
	return yaml.Marshal(obj)
}

// templateOf treats a pod template as a pod for the injector.
func templateOf(t *corev1.PodTemplateSpec) func() (*corev1.Pod, func(*corev1.Pod)) {
	return func() (*corev1.Pod, func(*corev1.Pod)) {
		return &corev1.Pod{ObjectMeta: t.ObjectMeta, Spec: t.Spec}, func(p *corev1.Pod) {
			t.ObjectMeta, t.Spec = p.ObjectMeta, p.Spec
		}
	}
}
