package redirect

import (
	"flag"
	"fmt"
	"io"

	"github.com/google/nftables"

	"github.com/weftmesh/weft/internal/wire"
)

// RunCommand is "weft init-redirect": it parses flags, installs the rules
// in the current network namespace and prints them.
func RunCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft init-redirect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	uid := fs.Uint("proxy-uid", wire.ProxyUID, "UID of the proxy, whose traffic is not captured")
	out := fs.Uint("outbound-port", wire.PortOutbound, "port that receives captured outbound TCP")
	in := fs.Uint("inbound-port", wire.PortInbound, "port that receives captured inbound TCP")
	exIn := fs.String("exclude-inbound-ports", "", "comma-separated inbound ports not captured (the proxy's admin, health and metrics ports belong here)")
	exOut := fs.String("exclude-outbound-ports", "", "comma-separated outbound destination ports not captured")
	exCIDR := fs.String("exclude-outbound-cidrs", "", "comma-separated outbound destination CIDRs not captured")
	dryRun := fs.Bool("dry-run", false, "print the rules without installing them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *uid > 1<<31 || *out > 65535 || *in > 65535 {
		return fmt.Errorf("--proxy-uid, --outbound-port or --inbound-port out of range")
	}
	c := Config{ProxyUID: uint32(*uid), OutboundPort: uint16(*out), InboundPort: uint16(*in)}
	var err error
	if c.ExcludeInboundPorts, err = ParsePorts(*exIn); err != nil {
		return fmt.Errorf("--exclude-inbound-ports: %w", err)
	}
	if c.ExcludeOutboundPorts, err = ParsePorts(*exOut); err != nil {
		return fmt.Errorf("--exclude-outbound-ports: %w", err)
	}
	if c.ExcludeOutboundCIDRs, err = ParseCIDRs(*exCIDR); err != nil {
		return fmt.Errorf("--exclude-outbound-cidrs: %w", err)
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if !*dryRun {
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("opening netlink: %w", err)
		}
		if err := Apply(conn, c); err != nil {
			return err
		}
	}
	fmt.Fprint(stdout, Describe(c))
	return nil
}
