package inject

import (
	"bytes"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// The preview injects a Deployment's template exactly as the webhook
// injects a pod, and passes other documents through.
func TestPreview(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
`
	var out bytes.Buffer
	if err := Preview(strings.NewReader(in), &out, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(out.String(), "\n---\n")
	if len(docs) != 2 || !strings.Contains(docs[1], "kind: Service") {
		t.Fatalf("documents lost or reordered:\n%s", out.String())
	}
	d := &appsv1.Deployment{}
	if err := yaml.UnmarshalStrict([]byte(docs[0]), d); err != nil {
		t.Fatal(err)
	}
	if len(d.Spec.Template.Spec.InitContainers) != 2 || d.Spec.Template.Spec.InitContainers[1].Name != ProxyContainer ||
		d.Spec.Template.Annotations[AnnotationInjected] != "envoy" {
		t.Errorf("the template was not injected:\n%s", docs[0])
	}
	if err := Preview(strings.NewReader("apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {mesh.weft.dev/proxy: nope}}\nspec: {containers: [{name: a, image: a}]}\n"), &out, DefaultConfig()); err == nil ||
		!strings.Contains(err.Error(), AnnotationProxy) {
		t.Errorf("an invalid annotation was not reported: %v", err)
	}
}
