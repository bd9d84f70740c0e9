package chart_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// The chart's schema refuses an access-log format by the controller's own
// rule (translate.AccessLogFormatPattern), so that helm install stops a
// format every sidecar would refuse, as the controller does at start.
func TestAccessLogFormatSchemaIsTheControllersRule(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "charts", "weft", "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Mesh struct {
				Properties struct {
					AccessLog struct {
						Properties struct {
							Format struct {
								Pattern string `json:"pattern"`
							} `json:"format"`
						} `json:"properties"`
					} `json:"accessLog"`
				} `json:"properties"`
			} `json:"mesh"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	if got, want := schema.Properties.Mesh.Properties.AccessLog.Properties.Format.Pattern, translate.AccessLogFormatPattern(); got != want {
		t.Errorf("mesh.accessLog.format's pattern in values.schema.json is not translate.AccessLogFormatPattern():\n got %s\nwant %s", got, want)
	}
}
