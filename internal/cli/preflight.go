package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/wire"
)

// checkVersion judges the API server's version.
func checkVersion(o CheckOptions, add func(Severity, string, string, string)) {
	const obj = "API server"
	if o.Major == "" {
		add(SeverityWarning, obj, "its version could not be read", "")
		return
	}
	minor, err := strconv.Atoi(strings.TrimRight(o.Minor, "+"))
	if o.Major != "1" || err != nil {
		add(SeverityWarning, obj, fmt.Sprintf("version %s.%s is not one weft knows", o.Major, o.Minor), "")
		return
	}
	if minor < MinKubernetesMinor {
		add(SeverityError, obj, fmt.Sprintf("Kubernetes 1.%d: weft injects its proxy as a native sidecar, which needs 1.%d or later", minor, MinKubernetesMinor),
			"upgrade the cluster to Kubernetes 1."+strconv.Itoa(MinKubernetesMinor)+" or later")
		return
	}
	pc := "it does not serve pod certificates (certificates.k8s.io/v1 PodCertificateRequest): workloads get their certificates over SDS only, and proxyless gRPC workloads none"
	if o.PodCertificates {
		pc = "it serves pod certificates (PodCertificateRequest): keys of proxyless gRPC workloads never leave their node"
	}
	add(SeverityInfo, obj, fmt.Sprintf("Kubernetes 1.%d; %s", minor, pc), "")
}

// weftCRDs are the CustomResourceDefinitions weft needs.
var weftCRDs = []string{"meshservices", "trafficpolicies", "peerauthentications", "meshtrusts"}

// checkCRDs finds weft's CRDs established and serving v1alpha1.
func checkCRDs(ctx context.Context, c client.Reader, add func(Severity, string, string, string)) {
	for _, plural := range weftCRDs {
		name := plural + "." + meshv1.GroupVersion.Group
		obj := "CustomResourceDefinition " + name
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		if err := c.Get(ctx, client.ObjectKey{Name: name}, u); err != nil {
			add(SeverityError, obj, "cannot be read: "+err.Error(), "install weft's CRDs (the chart installs them; or kubectl apply -f config/crd/bases)")
			continue
		}
		if st, msg := conditionOf(u, "Established"); st != "True" {
			add(SeverityError, obj, "is not established ("+st+": "+msg+")", "kubectl describe crd "+name)
		}
		versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
		served := false
		for _, raw := range versions {
			v, _ := raw.(map[string]any)
			if v["name"] == meshv1.GroupVersion.Version && v["served"] == true {
				served = true
			}
		}
		if !served {
			add(SeverityError, obj, "does not serve "+meshv1.GroupVersion.Version+", the version this weft reads", "install the CRDs of this weft's release")
		}
	}
}

// checkWebhook checks the injector: its MutatingWebhookConfiguration, its
// caBundle against the mesh's roots (when weft signs the webhook's
// certificate itself), and, with a server-side dry run of a pod in a
// namespace that opted in, that the API server reaches it and it injects.
func checkWebhook(ctx context.Context, c client.Client, o CheckOptions, flags map[string]string, anchors []meshv1.TrustedCertificate,
	add func(Severity, string, string, string)) {
	if flags["webhook-port"] == "0" {
		add(SeverityInfo, "Deployment "+o.MeshNamespace+"/"+o.Deployment, "--webhook-port=0: injection is off; pods are meshed only by hand", "")
		return
	}
	name := flagOr(flags, "webhook-configuration", "weft-injector")
	obj := "MutatingWebhookConfiguration " + name
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &mwc); err != nil {
		add(SeverityError, obj, "cannot be read ("+err.Error()+"): no pod is injected", "install it with the chart (injector.enabled=true), or name it with the controller's --webhook-configuration")
		return
	}
	for _, wh := range mwc.Webhooks {
		bundle := wh.ClientConfig.CABundle
		certs, err := identity.ParseCerts(bundle)
		switch {
		case len(bundle) == 0 || err != nil:
			add(SeverityError, obj, fmt.Sprintf("webhook %s has no caBundle the API server can use: it refuses the injector's certificate and every pod of an opted-in namespace", wh.Name),
				"with weft's own certificate the controller's leader fills it within a minute (is it running?); with --webhook-cert-dir, cert-manager's cainjector does (the chart's annotation)")
		case flags["webhook-cert-dir"] == "" && anchors != nil:
			var got, want []string
			for _, crt := range certs {
				sum := sha256.Sum256(crt.Raw)
				got = append(got, hex.EncodeToString(sum[:]))
			}
			for _, a := range anchors {
				want = append(want, a.SHA256)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				add(SeverityError, obj, fmt.Sprintf("webhook %s's caBundle holds %d certificate(s) that are not the mesh's %d root(s) (MeshTrust mesh): the API server does not trust the injector's certificate, signed by the mesh CA",
					wh.Name, len(certs), len(anchors)),
					"let the controller's leader write it (it does within a minute; is it running with --webhook-configuration="+name+"?), or remove what else writes it")
			}
		}
	}
	dryRunInjection(ctx, c, o, obj, add)
}

// dryRunInjection creates a pod with a server-side dry run in a namespace
// that opted in: the API server calls the webhook, and the pod it would
// store shows whether it was injected.
func dryRunInjection(ctx context.Context, c client.Client, o CheckOptions, obj string, add func(Severity, string, string, string)) {
	var nss corev1.NamespaceList
	if err := c.List(ctx, &nss, client.MatchingLabels{wire.LabelInject: wire.InjectEnabled}); err != nil {
		add(SeverityWarning, obj, "the namespaces that opted in cannot be listed ("+err.Error()+"); the webhook was not tried", "")
		return
	}
	var ns string
	for _, n := range nss.Items {
		if n.Name != o.MeshNamespace && (o.Namespace == "" || n.Name == o.Namespace) {
			ns = n.Name
			break
		}
	}
	if ns == "" {
		add(SeverityInfo, obj, "no namespace opted in (label "+wire.LabelInject+"="+wire.InjectEnabled+"): the webhook was not tried", "")
		return
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "weft-check-injection"}, Spec: corev1.PodSpec{
		ServiceAccountName: "default", AutomountServiceAccountToken: ptr.To(false),
		Containers: []corev1.Container{{Name: "app", Image: "weft-check.invalid/app"}},
	}}
	err := c.Create(ctx, pod, client.DryRunAll)
	switch {
	case err != nil && strings.Contains(err.Error(), "webhook"):
		add(SeverityError, obj, fmt.Sprintf("the API server could not use the injector for a pod in namespace %s (a server-side dry run): %v", ns, err),
			"check that the controller runs and is ready, that its Service reaches the webhook port, and the caBundle (above)")
	case apierrors.IsAlreadyExists(err):
		add(SeverityWarning, obj, "a pod weft-check-injection exists in namespace "+ns+"; the webhook was not tried", "delete it")
	case err != nil:
		add(SeverityWarning, obj, fmt.Sprintf("a dry-run pod in namespace %s was refused otherwise than by the webhook: %v", ns, err), "")
	case pod.Annotations[inject.AnnotationInjected] == "":
		add(SeverityError, obj, "a pod created (dry run) in namespace "+ns+", which opted in, came back without a proxy: the webhook did not inject it",
			"check the webhook's namespaceSelector and objectSelector, and the controller's log")
	default:
		add(SeverityInfo, obj, "the API server calls the injector: a pod in namespace "+ns+" (dry run) was injected ("+pod.Annotations[inject.AnnotationInjected]+")", "")
	}
}
