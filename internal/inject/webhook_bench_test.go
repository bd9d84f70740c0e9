package inject_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftmesh/weft/internal/inject"
)

// BenchmarkWebhookRoundTrip sends the API server's request for a typical
// pod (one container with ports and HTTP probes) to the running webhook
// over HTTPS, as the API server does, and reports the latency percentiles.
func BenchmarkWebhookRoundTrip(b *testing.B) {
	host, port, _ := env.WebhookServing()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(env.WebhookCA()) {
		b.Fatal("no webhook CA")
	}
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	url := fmt.Sprintf("https://%s:%d%s", host, port, inject.WebhookPath)

	var p *corev1.Pod
	for _, c := range cases(b) {
		if c.name == "probes" { // the pod with probes and named ports
			p = c.pod
		}
	}
	raw, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("bench"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: meshed, Name: p.Name,
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		},
	}
	body, err := json.Marshal(review)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		resp, err := httpc.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		var out admissionv1.AdmissionReview
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
		if err != nil || out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 {
			b.Fatalf("the webhook did not inject: %v %+v", err, out.Response)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(millis(at(lat, 0.50)), "p50-ms")
	b.ReportMetric(millis(at(lat, 0.99)), "p99-ms")
	b.ReportMetric(millis(at(lat, 1)), "max-ms")
}
