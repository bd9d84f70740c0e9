package mesh

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// Kinds of the objects the model gives verdicts on.
const (
	KindMeshService        = "MeshService"
	KindTrafficPolicy      = "TrafficPolicy"
	KindPeerAuthentication = "PeerAuthentication"
)

// Ref names one object the model judged.
type Ref struct {
	Kind, Namespace, Name string
}

// String is "<Kind>/<namespace>/<name>".
func (r Ref) String() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// Verdict is what weft decided about an object's current generation:
// whether it is valid on its own and against its peers (Accepted), and
// whether everything it names exists (ResolvedRefs). An object is applied
// only when both pass; otherwise its last good generation stays in force.
// The kind's other status fields come with it.
type Verdict struct {
	Generation             int64
	Accepted, ResolvedRefs Check
	// RulesEnforced says whether a MeshService in force has its allow
	// rules hold as written (enforce.go); zero for other kinds and for a
	// MeshService whose current generation is not in force.
	RulesEnforced Check
	// Endpoints counts a MeshService's endpoints.
	Endpoints meshv1.EndpointCounts
	// Scope and Workloads are a PeerAuthentication's reach and the pods it
	// covers.
	Scope     meshv1.PeerAuthenticationScope
	Workloads int32
}

// InForce says whether the verdict lets the generation be applied.
func (v Verdict) InForce() bool { return v.Accepted.OK && v.ResolvedRefs.OK }

// Check is one decision of a verdict.
type Check struct {
	OK     bool
	Reason string
	// Message says what was found and, on failure, what to change.
	Message string
	// Field is the path of the field a failure is about ("" when it
	// passes).
	Field string
}

func pass(reason, format string, args ...any) Check {
	if len(args) == 0 {
		return Check{OK: true, Reason: reason, Message: format}
	}
	return Check{OK: true, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func fail(field, reason, format string, args ...any) Check {
	return Check{Reason: reason, Message: fmt.Sprintf(format, args...), Field: field}
}

// Older is the one rule for competing claims (two MeshServices on one
// Service, two TrafficPolicies on one port, two PeerAuthentications on one
// scope): the older object wins, and of two created in the same second the
// one whose name sorts first.
func Older(a, b metav1.Object) int {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	if c := ta.Compare(tb.Time); c != 0 {
		return c
	}
	return cmp.Compare(a.GetName(), b.GetName())
}

// OldestFirst orders objects by Older, in a copy (items itself when
// there is nothing to order).
func OldestFirst[P metav1.Object](items []P) []P {
	if len(items) < 2 {
		return items
	}
	out := slices.Clone(items)
	slices.SortStableFunc(out, func(a, b P) int { return Older(a, b) })
	return out
}

// checkRegex fails, naming field, when value does not compile as an RE2
// regular expression (the dialect Envoy and grpc-go use).
func checkRegex(field, value string) (Check, bool) {
	if _, err := regexp.Compile(value); err != nil {
		return fail(field, meshv1.ReasonInvalid, "%s: invalid regular expression: %s", field, err), false
	}
	return Check{}, true
}

// checkPathMatch checks a path match that admission could not fully check.
func checkPathMatch(field string, p *meshv1.PathMatch) (Check, bool) {
	if p == nil || p.Type != meshv1.MatchRegularExpression {
		return Check{}, true
	}
	return checkRegex(field+".value", p.Value)
}

// checkHeaderMatch checks a header match that admission could not fully
// check.
func checkHeaderMatch(field string, h meshv1.HeaderMatch) (Check, bool) {
	if h.Type != meshv1.HeaderMatchRegularExpression || h.Value == nil {
		return Check{}, true
	}
	return checkRegex(field+".value", *h.Value)
}

func portList(ports []meshv1.MeshServicePort) string {
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		out = append(out, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
	}
	return strings.Join(out, ", ")
}
