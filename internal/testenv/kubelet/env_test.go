package kubelet

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The environment follows the kubelet's rules: downward API fields, then
// $(NAME) expanded from the variables before, $$ a dollar, references to
// variables not (yet) defined left as written.
func TestEnv(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}, Spec: corev1.PodSpec{ServiceAccountName: "sa", NodeName: "n"}}
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	c := corev1.Container{Name: "app", Env: []corev1.EnvVar{
		{Name: "EARLY", Value: "$(NS)"},
		field("NS", "metadata.namespace"),
		field("POD", "metadata.name"),
		field("SA", "spec.serviceAccountName"),
		{Name: "ID", Value: "spiffe://td/ns/$(NS)/sa/$(SA)"},
		{Name: "MIXED", Value: "$$(NS) $(NOPE) $(POD).$(NS) $x $( $"},
	}}
	got, err := Env(pod, c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"EARLY=$(NS)", "NS=shop", "POD=p", "SA=sa", "ID=spiffe://td/ns/shop/sa/sa", "MIXED=$(NS) $(NOPE) p.shop $x $( $"}
	if !slices.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}})
	if _, err := Env(pod, c); err == nil {
		t.Error("a secret source was accepted")
	}
}
