package translate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/golden"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// casesDir holds one directory per golden case: its inputs, input.yaml
// (Kubernetes objects) and case.yaml (the proxy and translation options),
// and one output file per xDS type.
const casesDir = "testdata/cases"

// goldenCase is a case's case.yaml.
type goldenCase struct {
	Proxy struct {
		ID      string       `json:"id"`
		Flavour wire.Flavour `json:"flavour"`
		Pod     string       `json:"pod,omitempty"`
		// Delivery is the delivery the proxy was injected with.
		Delivery wire.CertDelivery `json:"delivery,omitempty"`
	} `json:"proxy"`
	EnvoyCerts EnvoyCerts `json:"envoyCerts,omitempty"`
	// Observe is the sidecars' access logs and tracing (the controller's
	// --access-log-format, --tracing-endpoint and --tracing-sampling).
	Observe struct {
		AccessLogFormat string  `json:"accessLogFormat,omitempty"`
		TracingEndpoint string  `json:"tracingEndpoint,omitempty"`
		TracingSampling float64 `json:"tracingSampling,omitempty"`
	} `json:"observe,omitempty"`
}

// options are the translation options a case asks for.
func (c goldenCase) options() Options {
	return Options{EnvoyCerts: c.EnvoyCerts, Observe: Observability{
		AccessLogFormat: c.Observe.AccessLogFormat, TracingEndpoint: c.Observe.TracingEndpoint, TracingSampling: c.Observe.TracingSampling,
	}}
}

// TestGoldenCases translates each case's objects for its proxy and
// compares every xDS type with its file; -update rewrites them and
// deletes the outputs a case no longer produces.
func TestGoldenCases(t *testing.T) {
	dirs, err := os.ReadDir(casesDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		t.Run(d.Name(), func(t *testing.T) {
			dir := filepath.Join(casesDir, d.Name())
			var c goldenCase
			readYAML(t, filepath.Join(dir, "case.yaml"), &c)
			in := readObjects(t, filepath.Join(dir, "input.yaml"))
			opts := c.options()
			if err := opts.Observe.Validate(); err != nil {
				t.Fatal(err)
			}
			r, err := translateFor(mesh.Build(in), Proxy{ID: c.Proxy.ID, Flavour: c.Proxy.Flavour, Pod: c.Proxy.Pod, Delivery: c.Proxy.Delivery}, opts)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string][]byte{}
			for name, msgs := range map[string][]proto.Message{
				"listeners.yaml": toMsgs(r.Listeners), "routes.yaml": toMsgs(r.Routes),
				"clusters.yaml": toMsgs(r.Clusters), "endpoints.yaml": toMsgs(r.Endpoints), "secrets.yaml": toMsgs(r.Secrets),
			} {
				if len(msgs) > 0 {
					out[name] = resourcesYAML(t, msgs)
				}
			}
			golden.Dir(t, dir, out, "case.yaml", "input.yaml")
		})
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// readObjects reads a multi-document YAML file of the kinds the model is
// built from.
func readObjects(t *testing.T, path string) mesh.Input {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in mesh.Input
	for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s, document %d: %v", path, i, err)
		}
		var err error
		switch head.Kind {
		case "Service":
			err = appendObject(doc, &in.Services)
		case "EndpointSlice":
			err = appendObject(doc, &in.EndpointSlices)
		case "Pod":
			err = appendObject(doc, &in.Pods)
		case "Namespace":
			err = appendObject(doc, &in.Namespaces)
		case "MeshService":
			err = appendObject(doc, &in.MeshServices)
		case "TrafficPolicy":
			err = appendObject(doc, &in.TrafficPolicies)
		case "PeerAuthentication":
			err = appendObject(doc, &in.PeerAuthentications)
		case "Node":
			err = appendObject(doc, &in.Nodes)
		default:
			err = fmt.Errorf("kind %q is not one the model is built from", head.Kind)
		}
		if err != nil {
			t.Fatalf("%s, document %d: %v", path, i, err)
		}
	}
	return in
}

func appendObject[T any](doc []byte, to *[]T) error {
	var o T
	if err := yaml.UnmarshalStrict(doc, &o); err != nil {
		return err
	}
	*to = append(*to, o)
	return nil
}

// resourcesYAML renders resources as a YAML list, in their order (sorted
// by name).
func resourcesYAML(t *testing.T, msgs []proto.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("[")
	for i, m := range msgs {
		raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			buf.WriteString(",")
		}
		buf.Write(raw)
	}
	buf.WriteString("]")
	out, err := yaml.JSONToYAML(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return out
}
