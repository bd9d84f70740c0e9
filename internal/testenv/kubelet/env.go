package kubelet

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Env is the environment a kubelet gives a container of pod, in the
// container's order: a variable from the downward API takes the pod's
// field (metadata.name, metadata.namespace, metadata.uid,
// spec.serviceAccountName, spec.nodeName), a value has the $(NAME)
// references to variables before it expanded ($$ is a dollar, a reference
// to no such variable stays as written), as the kubelet does. Other
// sources (secrets, config maps, resources) are refused: the tests do not
// use them.
func Env(pod *corev1.Pod, c corev1.Container) ([]string, error) {
	defined := map[string]string{}
	out := make([]string, 0, len(c.Env))
	for _, e := range c.Env {
		v := expand(e.Value, defined)
		if e.ValueFrom != nil {
			ref := e.ValueFrom.FieldRef
			if ref == nil {
				return nil, fmt.Errorf("container %s: variable %s: only fieldRef sources are supported", c.Name, e.Name)
			}
			var ok bool
			if v, ok = podField(pod, ref.FieldPath); !ok {
				return nil, fmt.Errorf("container %s: variable %s: field %s is not supported", c.Name, e.Name, ref.FieldPath)
			}
		}
		defined[e.Name] = v
		out = append(out, e.Name+"="+v)
	}
	return out, nil
}

func podField(pod *corev1.Pod, path string) (string, bool) {
	switch path {
	case "metadata.name":
		return pod.Name, true
	case "metadata.namespace":
		return pod.Namespace, true
	case "metadata.uid":
		return string(pod.UID), true
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, true
	case "spec.nodeName":
		return pod.Spec.NodeName, true
	}
	return "", false
}

// expand replaces $(NAME) with NAME's value where NAME is defined and $$
// with $, leaving everything else as written.
func expand(s string, defined map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := defined[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
