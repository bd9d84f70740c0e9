package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
)

// Severity of a finding: an error fails the check.
type Severity string

// The severities: an error fails the check, a warning does not, info
// says what holds.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityInfo    Severity = "info"
)

// Finding is one thing weft check found: the object it is about, what is
// wrong (or what holds), and what to do.
type Finding struct {
	Severity Severity
	Object   string
	Message  string
	Fix      string
}

// CheckOptions say where the control plane is.
type CheckOptions struct {
	// MeshNamespace and Deployment locate the controller.
	MeshNamespace, Deployment string
	// PodCertificates says the API server serves PodCertificateRequests
	// (certificates.k8s.io/v1).
	PodCertificates bool
	// Version is the API server's version (major and minor, as the
	// discovery API gives them); empty when it could not be read.
	Major, Minor string
	// Namespace, when set, limits the analysis of the mesh's objects (and
	// the webhook's test pod) to one namespace.
	Namespace string
	// Now is the time expiries are judged at.
	Now time.Time
}

// MinKubernetesMinor is the oldest Kubernetes 1.x weft supports: the
// injected proxy is a native sidecar (an init container with
// restartPolicy: Always), which API servers take from 1.29 on.
const MinKubernetesMinor = 29

// Check looks at how the controller is set up to certify workloads (its
// Deployment's flags) and at what that needs in the cluster: the issuer and
// trust bundle with --ca=cert-manager, pod certificates where they are
// asked for, the trust state it reports. It returns what it found, errors
// first.
func Check(ctx context.Context, c client.Client, o CheckOptions) []Finding {
	var out []Finding
	add := func(s Severity, obj, msg, fix string) { out = append(out, Finding{s, obj, msg, fix}) }
	checkVersion(o, add)
	checkCRDs(ctx, c, add)
	depName := "Deployment " + o.MeshNamespace + "/" + o.Deployment
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.MeshNamespace, Name: o.Deployment}, &dep); err != nil {
		add(SeverityError, depName, "the controller's Deployment cannot be read: "+err.Error(),
			"install weft (helm install weft charts/weft -n "+o.MeshNamespace+"), or name it with --mesh-namespace and --deployment")
		return sortFindings(append(out, analyzeMesh(ctx, c, o)...))
	}
	if dep.Status.AvailableReplicas == 0 {
		add(SeverityError, depName, "no replica of the controller is available: nothing serves proxies, injects pods or signs certificates",
			"kubectl -n "+o.MeshNamespace+" describe deployment "+o.Deployment+" and its pods' logs")
	}
	flags := controllerFlags(&dep)
	ca, delivery := flagOr(flags, "ca", "builtin"), flagOr(flags, "cert-delivery", "auto")
	switch ca {
	case "cert-manager":
		checkIssuer(ctx, c, o, flags, depName, add)
		switch delivery {
		case "podCertificate":
			add(SeverityError, depName, "--ca=cert-manager with --cert-delivery=podCertificate: a PodCertificateRequest carries no CSR an issuer would sign, and weft holds no CA; the controller refuses to start",
				"use --cert-delivery=sds (chart: mesh.certDelivery=sds), or a CA weft holds (--ca=builtin or external) for pod certificates")
		default:
			add(SeverityInfo, depName, "every workload certificate is signed by "+issuerOf(flags, o.MeshNamespace)+" and served to sidecars over SDS; keys live in the controller's memory; proxyless gRPC workloads get no certificate (plain text)",
				"for keys that never leave the node, use pod certificates with a CA weft holds (--ca=builtin or external)")
		}
	case "builtin", "external":
		if delivery == "podCertificate" && !o.PodCertificates {
			add(SeverityError, depName, "--cert-delivery=podCertificate, and the API server does not serve PodCertificateRequests (certificates.k8s.io/v1); the controller refuses to start",
				"use --cert-delivery=auto or sds, or enable the PodCertificateRequest API")
		}
		mode := "sidecars get theirs over SDS (keys in the controller's memory)"
		if delivery != "sds" && o.PodCertificates {
			mode += "; proxyless gRPC workloads get pod certificates (keys on the node)"
		}
		add(SeverityInfo, depName, fmt.Sprintf("weft signs workload certificates with its %s CA; %s", ca, mode), "")
	default:
		add(SeverityError, depName, fmt.Sprintf("--ca=%s is none of builtin, external, cert-manager", ca), "fix the flag (chart: mesh.ca.source)")
	}
	anchors := checkTrust(ctx, c, o.Now, add)
	checkWebhook(ctx, c, o, flags, anchors, add)
	return sortFindings(append(out, analyzeMesh(ctx, c, o)...))
}

// sortFindings puts errors first, then warnings, then the rest, each in
// the order found.
func sortFindings(out []Finding) []Finding {
	rank := map[Severity]int{SeverityError: 0, SeverityWarning: 1, SeverityInfo: 2}
	sorted := make([]Finding, 0, len(out))
	for r := range 3 {
		for _, f := range out {
			if rank[f.Severity] == r {
				sorted = append(sorted, f)
			}
		}
	}
	return sorted
}

// analyzeMesh builds the model from the cluster's objects and analyzes it.
func analyzeMesh(ctx context.Context, c client.Reader, o CheckOptions) []Finding {
	m, err := LoadMesh(ctx, c, Controller{Namespace: o.MeshNamespace, Deployment: o.Deployment})
	if err != nil {
		return []Finding{{SeverityError, "the mesh's objects", err.Error(), "check that weft's CRDs are installed and that you may list them"}}
	}
	var sas corev1.ServiceAccountList
	objs := Objects{}
	if err := c.List(ctx, &sas); err == nil {
		objs.ServiceAccounts = map[string]bool{}
		for _, sa := range sas.Items {
			objs.ServiceAccounts[sa.Namespace+"/"+sa.Name] = true
		}
	}
	return Analyze(m, objs, o.Namespace)
}

func checkIssuer(ctx context.Context, c client.Reader, o CheckOptions, flags map[string]string, depName string, add func(Severity, string, string, string)) {
	name := flags["issuer-name"]
	if name == "" {
		add(SeverityError, depName, "--ca=cert-manager without --issuer-name; the controller refuses to start", "set mesh.ca.issuerRef.name")
		return
	}
	kind, group := flagOr(flags, "issuer-kind", "Issuer"), flagOr(flags, "issuer-group", "cert-manager.io")
	obj := issuerOf(flags, o.MeshNamespace)
	if group == "cert-manager.io" && (kind == "Issuer" || kind == "ClusterIssuer") {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: group, Version: "v1", Kind: kind})
		key := client.ObjectKey{Name: name}
		if kind == "Issuer" {
			key.Namespace = o.MeshNamespace
		}
		switch err := c.Get(ctx, key, u); {
		case meta.IsNoMatchError(err):
			add(SeverityError, obj, "cert-manager is not installed (no "+kind+" kind)", "install cert-manager")
		case apierrors.IsNotFound(err):
			add(SeverityError, obj, "the issuer weft asks does not exist; new pods wait for certificates", "create it, or fix mesh.ca.issuerRef")
		case err != nil:
			add(SeverityWarning, obj, "the issuer cannot be read: "+err.Error(), "")
		default:
			if ready, msg := conditionOf(u, "Ready"); ready != "True" {
				add(SeverityError, obj, "the issuer is not Ready ("+ready+": "+msg+"); new pods wait for certificates, running ones renew until theirs expire", "fix the issuer (kubectl describe "+strings.ToLower(kind)+" "+name+")")
			}
		}
	}
	bundle := flagOr(flags, "trust-bundle", identity.DefaultTrustBundle)
	var cm corev1.ConfigMap
	cmName := "ConfigMap " + o.MeshNamespace + "/" + bundle
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.MeshNamespace, Name: bundle}, &cm); err != nil {
		add(SeverityError, cmName, "the trust bundle cannot be read ("+err.Error()+"); the controller waits for it and serves nothing signed",
			"publish the issuer's root as key "+identity.BundleKey+" (a trust-manager Bundle, or kubectl create configmap "+bundle+" --from-file="+identity.BundleKey+"=root.pem -n "+o.MeshNamespace+")")
		return
	}
	if _, err := identity.ParseCerts([]byte(cm.Data[identity.BundleKey])); err != nil {
		add(SeverityError, cmName, "key "+identity.BundleKey+" holds no certificate: "+err.Error(), "put the issuer's root there, PEM")
	}
}

// checkTrust reads the trust state the controller reports and returns
// the anchors (nil when there is no trust state).
func checkTrust(ctx context.Context, c client.Reader, now time.Time, add func(Severity, string, string, string)) []meshv1.TrustedCertificate {
	obj := "MeshTrust " + meshv1.MeshTrustName
	var mt meshv1.MeshTrust
	if err := c.Get(ctx, client.ObjectKey{Name: meshv1.MeshTrustName}, &mt); err != nil {
		add(SeverityWarning, obj, "no trust state yet ("+err.Error()+"): the controller's leader writes it once it runs", "")
		return nil
	}
	certs := slices.Clone(mt.Status.Anchors)
	if mt.Status.SigningCA != nil {
		certs = append(certs, *mt.Status.SigningCA)
	}
	for _, crt := range certs {
		if !now.IsZero() && !crt.NotAfter.After(now) {
			add(SeverityError, obj, fmt.Sprintf("the certificate %q (serial %s) expired at %s: certificates that chain to it fail every handshake",
				crt.Subject, crt.SerialNumber, crt.NotAfter.UTC().Format(time.RFC3339)), "renew it: weft ca rotate for the built-in CA; docs/operations.md for the other sources")
		}
	}
	if r := meta.FindStatusCondition(mt.Status.Conditions, meshv1.ConditionReady); r == nil || r.Status != "True" {
		msg := "the controller has not loaded the mesh's trust"
		if r != nil {
			msg += ": " + r.Message
		}
		add(SeverityError, obj, msg, "see the controller's log and the conditions above")
	}
	if e := meta.FindStatusCondition(mt.Status.Conditions, meshv1.ConditionCAExpiring); e != nil && e.Status == "True" {
		add(SeverityError, obj, e.Message, "weft ca status shows the certificates; docs/operations.md says how to renew each source")
	}
	return mt.Status.Anchors
}

// controllerFlags reads --name=value flags of the controller container.
func controllerFlags(dep *appsv1.Deployment) map[string]string {
	flags := map[string]string{}
	for _, ctr := range dep.Spec.Template.Spec.Containers {
		args := append(append([]string{}, ctr.Command...), ctr.Args...)
		if !containsArg(args, "controller") {
			continue
		}
		for _, a := range args {
			if name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
				flags[name] = value
			}
		}
	}
	return flags
}

func containsArg(args []string, want string) bool {
	for _, a := range args {
		if a == want {
			return true
		}
	}
	return false
}

func flagOr(flags map[string]string, name, def string) string {
	if v, ok := flags[name]; ok && v != "" {
		return v
	}
	return def
}

func issuerOf(flags map[string]string, ns string) string {
	kind, group, name := flagOr(flags, "issuer-kind", "Issuer"), flagOr(flags, "issuer-group", "cert-manager.io"), flags["issuer-name"]
	if group != "cert-manager.io" {
		kind += "." + group
	}
	if kind == "Issuer" {
		return kind + " " + ns + "/" + name
	}
	return kind + " " + name
}

func conditionOf(u *unstructured.Unstructured, t string) (status, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, raw := range conds {
		c, _ := raw.(map[string]any)
		if c["type"] == t {
			s, _ := c["status"].(string)
			m, _ := c["message"].(string)
			return s, m
		}
	}
	return "Unknown", "no " + t + " condition"
}

// PrintFindings writes findings one per line and says how many are errors.
func PrintFindings(out io.Writer, findings []Finding) (errors int) {
	for _, f := range findings {
		line := fmt.Sprintf("%-7s %s: %s", f.Severity, f.Object, f.Message)
		if f.Fix != "" {
			line += "\n        fix: " + f.Fix
		}
		fmt.Fprintln(out, line)
		if f.Severity == SeverityError {
			errors++
		}
	}
	return errors
}
