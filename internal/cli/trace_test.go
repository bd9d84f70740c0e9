package cli

import (
	"strings"
	"testing"
)

// ParseTraceRequest reads both flavours' requests and names the flag or
// part that is wrong.
func TestParseTraceRequest(t *testing.T) {
	req, err := ParseTraceRequest("grpc://reviews.shop.svc.cluster.local:9080/weft.test.Reviews/Get", []string{"x-canary=true", "X-User: alice"}, "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if req.Host != "reviews.shop.svc.cluster.local" || req.Port != 9080 || req.Path != "/weft.test.Reviews/Get" || req.Method != "POST" ||
		req.Headers["x-canary"] != "true" || req.Headers["x-user"] != "alice" || req.Headers["content-type"] != "application/grpc" || req.Inbound {
		t.Errorf("a gRPC call: %+v", req)
	}
	req, err = ParseTraceRequest("http://10.96.0.7:9090/ratings/1?full=1", nil, "", "", false)
	if err != nil || req.Method != "GET" || req.Path != "/ratings/1?full=1" || req.Host != "10.96.0.7" {
		t.Errorf("an HTTP request: %+v, %v", req, err)
	}
	req, err = ParseTraceRequest("grpc://:9080/weft.test.Reviews/Get", nil, "", "shop/productpage", false)
	if err != nil || !req.Inbound || req.principal("example.org") != "spiffe://example.org/ns/shop/sa/productpage" {
		t.Errorf("a call into the pod: %+v, %v", req, err)
	}
	for _, c := range []struct {
		raw, from string
		headers   []string
		plaintext bool
		want      string
	}{
		{raw: "ftp://x:1/", want: "the scheme must be grpc, http or tcp"},
		{raw: "grpc://reviews/x.Y/Z", want: "give the service's port"},
		{raw: "grpc://reviews:9080/x.Y/Z", headers: []string{"novalue"}, want: `-H "novalue": want name=value`},
		{raw: "grpc://:9080/x.Y/Z", want: "name the service (host:port) the pod calls, or give --from"},
		{raw: "grpc://:9080/x.Y/Z", from: "productpage", want: `--from "productpage"`},
		{raw: "grpc://:9080/x.Y/Z", from: "shop/a", plaintext: true, want: "--from and --plaintext"},
		{raw: "tcp://db:5432/x", want: "a tcp:// request has no path or headers"},
	} {
		if _, err := ParseTraceRequest(c.raw, c.headers, "", c.from, c.plaintext); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (from %q, headers %v): %v, want %q", c.raw, c.from, c.headers, err, c.want)
		}
	}
}
