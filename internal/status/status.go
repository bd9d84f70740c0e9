// Package status writes the status of weft's resources. Every writer applies
// only the fields it owns, under its own field manager, with server-side
// apply: a condition that a writer leaves out of its next apply is removed,
// and writers never overwrite each other's conditions. A writer sends
// nothing when what it owns is already as desired, so that a status write
// never triggers another.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Update is what one writer wants status to hold.
type Update struct {
	// Conditions are the writer's conditions. Every condition type listed
	// in OwnedTypes but missing here is removed.
	Conditions []metav1.Condition
	// OwnedTypes are the condition types this writer owns.
	OwnedTypes []string
	// Fields are the other status fields the writer owns, by JSON name, as
	// Go values (structs are converted to JSON objects). Nil leaves them
	// alone.
	Fields map[string]any
}

// Writer applies one writer's part of status.
type Writer struct {
	Client client.Client
	Scheme *runtime.Scheme
	// Owner is the field manager, for example "weft-meshservice".
	Owner string
}

// Apply makes obj's status hold u, keeping each condition's
// lastTransitionTime while its status stays the same. current is the
// object's status conditions as last read, and currentFields the owned
// fields as they are now (same keys as u.Fields). It reports whether it
// wrote anything.
func (w Writer) Apply(ctx context.Context, obj client.Object, current []metav1.Condition, currentFields map[string]any, u Update) (bool, error) {
	desired := Merge(current, u.Conditions, metav1.Now())
	if !changed(current, desired, u.OwnedTypes) && reflect.DeepEqual(normalize(currentFields), normalize(u.Fields)) {
		return false, nil
	}

	gvk, err := apiutil.GVKForObject(obj, w.Scheme)
	if err != nil {
		return false, fmt.Errorf("finding the kind of %T: %w", obj, err)
	}
	st := map[string]any{}
	for k, v := range u.Fields {
		conv, err := toUnstructured(v)
		if err != nil {
			return false, fmt.Errorf("converting status.%s: %w", k, err)
		}
		st[k] = conv
	}
	conds := make([]any, 0, len(desired))
	for i := range desired {
		c, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&desired[i])
		if err != nil {
			return false, fmt.Errorf("converting condition %s: %w", desired[i].Type, err)
		}
		conds = append(conds, c)
	}
	st["conditions"] = conds

	reasons := make([]string, 0, len(desired))
	for _, c := range desired {
		reasons = append(reasons, c.Type+"="+string(c.Status)+"/"+c.Reason)
	}
	logr.FromContextOrDiscard(ctx).V(1).Info("Applying status", "owner", w.Owner,
		"object", klog.KObj(obj), "kind", gvk.Kind, "conditions", reasons)

	patch := &unstructured.Unstructured{Object: map[string]any{"status": st}}
	patch.SetGroupVersionKind(gvk)
	patch.SetName(obj.GetName())
	patch.SetNamespace(obj.GetNamespace())
	err = w.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(patch),
		client.FieldOwner(w.Owner), client.ForceOwnership)
	if err != nil {
		return false, fmt.Errorf("applying status of %s %s/%s as %s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), w.Owner, err)
	}
	return true, nil
}

// Merge returns the desired conditions with lastTransitionTime carried over
// from current wherever a condition's status did not change, and set to now
// where it did.
func Merge(current, desired []metav1.Condition, now metav1.Time) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(desired))
	for _, d := range desired {
		d.LastTransitionTime = now
		if c := meta.FindStatusCondition(current, d.Type); c != nil && c.Status == d.Status {
			d.LastTransitionTime = c.LastTransitionTime
		}
		out = append(out, d)
	}
	return out
}

// changed says whether the owned conditions differ between current and
// desired, ignoring lastTransitionTime.
func changed(current, desired []metav1.Condition, owned []string) bool {
	for _, t := range owned {
		c, d := meta.FindStatusCondition(current, t), meta.FindStatusCondition(desired, t)
		switch {
		case c == nil && d == nil:
			continue
		case c == nil || d == nil:
			return true
		case c.Status != d.Status || c.Reason != d.Reason || c.Message != d.Message || c.ObservedGeneration != d.ObservedGeneration:
			return true
		}
	}
	return false
}

// normalize turns Go values into their JSON shape so that a typed value and
// the same value read back compare equal.
func normalize(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		u, err := toUnstructured(v)
		if err != nil {
			out[k] = v
			continue
		}
		out[k] = u
	}
	return out
}

// toUnstructured converts a Go value to its JSON shape (maps, slices,
// strings, float64s, bools), which is what the apply request carries.
func toUnstructured(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}
