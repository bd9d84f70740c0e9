package redirect

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func testConfig() Config {
	return Config{
		ProxyUID:             1337,
		OutboundPort:         15001,
		InboundPort:          15006,
		ExcludeInboundPorts:  []uint16{15021, 15090, 15000},
		ExcludeOutboundPorts: []uint16{5432, 5432},
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26"), netip.MustParsePrefix("fd00::/8")},
	}
}

// TestRulesGolden pins the rule set; regenerate with -update.
func TestRulesGolden(t *testing.T) {
	got := Describe(testConfig())
	path := filepath.Join("testdata", "rules.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("rules differ from %s (run with -update if intended):\n%s", path, got)
	}
}

func TestParseAndValidate(t *testing.T) {
	if _, err := ParsePorts("80, 443,,8080"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"0", "65536", "http", "80;81"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
	if p, err := ParseCIDRs("10.1.2.3/8, fd00::1/8"); err != nil || len(p) != 2 || p[0].String() != "10.0.0.0/8" {
		t.Errorf("ParseCIDRs = %v, %v", p, err)
	}
	if _, err := ParseCIDRs("10.0.0.0"); err == nil {
		t.Error("a CIDR without a length was accepted")
	}
	for _, c := range []Config{
		{OutboundPort: 15001, InboundPort: 15006},
		{ProxyUID: 1337, OutboundPort: 15001, InboundPort: 15001},
		{ProxyUID: 1337, InboundPort: 15006},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
}
