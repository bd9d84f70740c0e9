// Package redirect installs the traffic-capture rules of a meshed pod with
// nftables, over netlink (no nft or iptables binary): outbound TCP goes to
// the proxy's outbound port, inbound TCP to its inbound port. The proxy's
// own traffic (by UID), loopback, and the excluded ports and CIDRs pass
// untouched. The rules live in one table, "weft", which Apply replaces as a
// whole in one transaction, so running it again leaves one set of rules.
package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) that holds the rules.
const TableName = "weft"

// Config says what to capture.
type Config struct {
	// ProxyUID is the UID the proxy runs as; its traffic is never captured.
	ProxyUID uint32
	// OutboundPort receives captured outbound connections (15001).
	OutboundPort uint16
	// InboundPort receives captured inbound connections (15006).
	InboundPort uint16
	// ExcludeInboundPorts are destination ports of inbound connections
	// that go straight to the application (the proxy's own ports belong
	// here: admin, health, metrics).
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports of outbound connections
	// that go straight out.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destinations that go straight out.
	ExcludeOutboundCIDRs []netip.Prefix
}

// Validate checks a Config before any rule is touched.
func (c Config) Validate() error {
	var errs []error
	if c.OutboundPort == 0 {
		errs = append(errs, errors.New("outbound port: must be set"))
	}
	if c.InboundPort == 0 {
		errs = append(errs, errors.New("inbound port: must be set"))
	}
	if c.OutboundPort != 0 && c.OutboundPort == c.InboundPort {
		errs = append(errs, fmt.Errorf("inbound port: %d is also the outbound port", c.InboundPort))
	}
	if c.ProxyUID == 0 {
		errs = append(errs, errors.New("proxy UID: must not be 0 (root's traffic would escape capture)"))
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("excluded CIDR %v: not valid", p))
		}
	}
	return errors.Join(errs...)
}

// maxQuoted is how much of a value an error quotes.
const maxQuoted = 64

// quote quotes a value for an error, its first maxQuoted characters at
// most, so that an error stays short whatever the input.
func quote(v string) string {
	if r := []rune(v); len(r) > maxQuoted {
		return fmt.Sprintf("%q… (%d characters more)", string(r[:maxQuoted]), len(r)-maxQuoted)
	}
	return strconv.Quote(v)
}

// ParsePorts parses "80,443,8080" (spaces allowed, empty is none).
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%s is not a port (1-65535)", quote(f))
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// ParseCIDRs parses "10.0.0.0/8, fd00::/8" (empty is none).
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		switch {
		case err != nil && len(f) > maxQuoted:
			// netip's error repeats the whole value.
			return nil, fmt.Errorf("%s is not a CIDR", quote(f))
		case err != nil:
			return nil, fmt.Errorf("%q is not a CIDR: %w", f, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Rule is one rule of a chain, as a readable line and as nftables
// expressions.
type Rule struct {
	Text  string
	Exprs []expr.Any
}

// Rules returns the rules of the output chain (outbound capture) and of the
// prerouting chain (inbound capture), in order. It is a pure function of
// the Config.
func Rules(c Config) (output, prerouting []Rule) {
	notTCP := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	output = append(output,
		Rule{"meta l4proto != tcp accept", notTCP},
		Rule{fmt.Sprintf("meta skuid %d accept", c.ProxyUID), []expr.Any{
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(c.ProxyUID)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}},
	)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, p := range append(loopback, c.ExcludeOutboundCIDRs...) {
		output = append(output, daddrAccept(p))
	}
	for _, p := range dedup(c.ExcludeOutboundPorts) {
		output = append(output, dportAccept(p))
	}
	output = append(output, redirectTo(c.OutboundPort))

	prerouting = append(prerouting, Rule{"meta l4proto != tcp accept", notTCP})
	for _, p := range dedup(append(slices.Clone(c.ExcludeInboundPorts), c.InboundPort, c.OutboundPort)) {
		prerouting = append(prerouting, dportAccept(p))
	}
	prerouting = append(prerouting, redirectTo(c.InboundPort))
	return output, prerouting
}

func dedup(ports []uint16) []uint16 {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

func dportAccept(port uint16) Rule {
	return Rule{fmt.Sprintf("tcp dport %d accept", port), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}}
}

// daddrAccept accepts connections to a prefix, for its address family.
func daddrAccept(p netip.Prefix) Rule {
	family, offset, size, name := byte(unix.NFPROTO_IPV4), uint32(16), 4, "ip"
	if p.Addr().Is6() {
		family, offset, size, name = unix.NFPROTO_IPV6, 24, 16, "ip6"
	}
	mask := make([]byte, size)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return Rule{fmt.Sprintf("%s daddr %s accept", name, p), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(size)},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(size), Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}}
}

func redirectTo(port uint16) Rule {
	return Rule{fmt.Sprintf("meta l4proto tcp redirect to :%d", port), []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}}
}

// Apply replaces the weft table in the network namespace that conn talks
// to with the rules for c, in one netlink transaction.
func Apply(conn *nftables.Conn, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	// Adding, then deleting, then adding the table in one batch replaces
	// it whether or not it existed before.
	conn.AddTable(table)
	conn.DelTable(table)
	table = conn.AddTable(table)
	output, prerouting := Rules(c)
	for _, chain := range []struct {
		name  string
		hook  *nftables.ChainHook
		rules []Rule
	}{
		{"output", nftables.ChainHookOutput, output},
		{"prerouting", nftables.ChainHookPrerouting, prerouting},
	} {
		ch := conn.AddChain(&nftables.Chain{
			Name: chain.name, Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: chain.hook, Priority: nftables.ChainPriorityNATDest,
		})
		for _, r := range chain.rules {
			conn.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: r.Exprs})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("installing the nftables table %q: %w", TableName, err)
	}
	return nil
}

// Describe renders the rules as nft would list them, for logs and the
// init container's output.
func Describe(c Config) string {
	output, prerouting := Rules(c)
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, ch := range []struct {
		name, hook string
		rules      []Rule
	}{{"output", "output", output}, {"prerouting", "prerouting", prerouting}} {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook %s priority dstnat; policy accept;\n", ch.name, ch.hook)
		for _, r := range ch.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.Text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
