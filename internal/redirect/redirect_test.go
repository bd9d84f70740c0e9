package redirect

import (
	"net/netip"
	"testing"

	"github.com/weftmesh/weft/internal/golden"
)

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
	golden.Check(t, "rules.golden", []byte(Describe(testConfig())))
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
