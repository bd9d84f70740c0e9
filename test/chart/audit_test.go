package chart_test

import (
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/internal/testenv"
)

// notExercised are the grants of the chart that the controller needs but
// that the install scenario cannot show it using, each with the reason.
// The audit check fails when a grant is unused and not listed here, and
// when a listed grant was used after all (the list is stale).
var notExercised = map[string]string{
	"create authentication.k8s.io/tokenreviews":                "the xDS server reviews a proxy's token, and the metrics endpoint a scraper's; no proxy connects and nothing scrapes here",
	"create authorization.k8s.io/subjectaccessreviews":         "the metrics endpoint asks whether a scraper may GET /metrics; nothing scrapes here",
	"update certificates.k8s.io/podcertificaterequests/status": "weft answers PodCertificateRequests that kubelets make; no kubelet runs here (controllers/podcertificate_controller_test.go covers it)",
	"sign certificates.k8s.io/signers/weft.dev/workload":       "never a request of its own: the API server checks it when weft writes a PodCertificateRequest's status",
	"patch /events":              "an event recorder patches an event only to count a repeat of it",
	"patch events.k8s.io/events": "an event recorder patches an event only to count a repeat of it",
}

// checkGrantsUsed lists every grant of the roles bound to the chart's
// ServiceAccount that the controller never used during the run recorded
// in the audit log, and fails for any that notExercised does not explain.
func checkGrantsUsed(t *testing.T, manifest []*unstructured.Unstructured, auditLog string) {
	t.Helper()
	user := "system:serviceaccount:" + releaseNamespace + ":weft-controller"
	events, err := testenv.ReadAudit(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	for _, ev := range events {
		// A request answered with anything but 401 or 403 used its grant
		// (a get answered 404 was allowed).
		if ev.User.Username != user || ev.ObjectRef == nil || ev.ResponseStatus == nil ||
			ev.ResponseStatus.Code == 401 || ev.ResponseStatus.Code == 403 {
			continue
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		obj := ev.ObjectRef.APIGroup + "/" + res + "/" + ev.ObjectRef.Name
		used = append(used, ev.Verb+" "+obj)
		switch {
		case ev.Verb == "patch" && ev.ResponseStatus.Code == 201:
			// A server-side apply that made the object: the API server
			// checked create as well.
			used = append(used, "create "+obj)
		case ev.Verb == "watch":
			// Informers list through a streaming watch (sendInitialEvents)
			// on this API server, and fall back to list where that is
			// not served: a watch stands for both.
			used = append(used, "list "+obj)
		}
	}
	if len(used) == 0 {
		t.Fatalf("the audit log %s has no request of %s", auditLog, user)
	}
	var granted []string
	for _, role := range boundRoles(t, manifest, user) {
		granted = append(granted, grants(role)...)
	}
	var unused []string
	for _, g := range granted {
		if slices.ContainsFunc(used, func(u string) bool { return grantCovers(g, u) }) {
			if why, listed := notExercised[g]; listed {
				t.Errorf("%s is listed as not exercised (%s), but the controller used it: take it off the list", g, why)
			}
			continue
		}
		unused = append(unused, g)
	}
	for _, g := range unused {
		if why, ok := notExercised[g]; ok {
			t.Logf("granted, not used in this run: %s (%s)", g, why)
		} else {
			t.Errorf("granted, never used by the controller: %s; drop it from the chart's RBAC, or say in notExercised why this run cannot show it", g)
		}
	}
}

// grantCovers says whether grant ("verb group/resource[/name]") allows
// request ("verb group/resource/name", name possibly empty).
func grantCovers(grant, request string) bool {
	if grant == request || grant+"/" == request {
		return true
	}
	// A grant without resourceNames covers every name.
	gv, gr, _ := strings.Cut(grant, " ")
	rv, rr, _ := strings.Cut(request, " ")
	if gv != rv {
		return false
	}
	return strings.Count(gr, "/") == strings.Count(rr, "/")-1 && strings.HasPrefix(rr, gr+"/") ||
		// a subresource grant: group/resource/sub against group/resource/sub/name
		strings.Count(gr, "/") == 2 && strings.HasPrefix(rr, gr+"/")
}

// boundRoles returns the rules of the Roles and ClusterRoles in manifest
// that its bindings grant to user (a ServiceAccount).
func boundRoles(t *testing.T, manifest []*unstructured.Unstructured, user string) [][]rbacv1.PolicyRule {
	t.Helper()
	parts := strings.Split(user, ":") // system:serviceaccount:<ns>:<name>
	var out [][]rbacv1.PolicyRule
	for _, o := range manifest {
		var ref rbacv1.RoleRef
		var subjects []rbacv1.Subject
		switch o.GetKind() {
		case "ClusterRoleBinding":
			b := typed[rbacv1.ClusterRoleBinding](t, o)
			ref, subjects = b.RoleRef, b.Subjects
		case "RoleBinding":
			b := typed[rbacv1.RoleBinding](t, o)
			ref, subjects = b.RoleRef, b.Subjects
		default:
			continue
		}
		if !slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Namespace == parts[2] && s.Name == parts[3]
		}) {
			continue
		}
		role := find(manifest, ref.Kind, ref.Name)
		if role == nil {
			t.Fatalf("%s %s binds %s %s, which the chart does not make", o.GetKind(), o.GetName(), ref.Kind, ref.Name)
		}
		if ref.Kind == "ClusterRole" {
			out = append(out, typed[rbacv1.ClusterRole](t, role).Rules)
		} else {
			out = append(out, typed[rbacv1.Role](t, role).Rules)
		}
	}
	return out
}

// TestGrantCovers: the matching the audit check relies on.
func TestGrantCovers(t *testing.T) {
	for _, c := range []struct {
		grant, request string
		want           bool
	}{
		{"get /configmaps", "get /configmaps/weft-root-ca", true},
		{"get /configmaps", "get /configmaps/", true},
		{"list /configmaps", "get /configmaps/x", false},
		{"get /secrets/weft-root-ca", "get /secrets/weft-root-ca", true},
		{"get /secrets/weft-root-ca", "get /secrets/other", false},
		{"patch mesh.weft.dev/meshservices/status", "patch mesh.weft.dev/meshservices/status/reviews", true},
		{"patch mesh.weft.dev/meshservices", "patch mesh.weft.dev/meshservices/status/reviews", false},
		{"get coordination.k8s.io/leases/weft-controller.mesh.weft.dev", "get coordination.k8s.io/leases/weft-controller.mesh.weft.dev", true},
	} {
		if got := grantCovers(c.grant, c.request); got != c.want {
			t.Errorf("grantCovers(%q, %q) = %v, want %v", c.grant, c.request, got, c.want)
		}
	}
}
