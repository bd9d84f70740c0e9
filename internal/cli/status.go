// Package cli holds weft's user commands.
package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/wire"
)

// Status prints the proxies connected to the xDS server at addr: flavour,
// the state and acknowledged version of each xDS type, and the last NACK.
func Status(ctx context.Context, addr string, out io.Writer) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to the xDS server at %s: %w", addr, err)
	}
	defer cc.Close()
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{})
	if err != nil {
		return fmt.Errorf("asking %s for proxy status: %w", addr, err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tFLAVOUR\tLISTENERS\tROUTES\tCLUSTERS\tENDPOINTS\tLAST NACK\tIDENTITY\tCERTIFICATE")
	for _, c := range resp.GetConfig() {
		cols := map[string]string{}
		var nacks []string
		for _, x := range c.GetGenericXdsConfigs() {
			kind := x.GetTypeUrl()[strings.LastIndex(x.GetTypeUrl(), ".")+1:]
			state := strings.ToLower(x.GetConfigStatus().String())
			if v := x.GetVersionInfo(); v != "" {
				state += " (" + v + ")"
			}
			cols[kind] = state
			if e := x.GetErrorState().GetDetails(); e != "" {
				nacks = append(nacks, kind+" "+e)
			}
		}
		nack := "-"
		if len(nacks) > 0 {
			nack = strings.Join(nacks, "; ")
		}
		meta := c.GetNode().GetMetadata().GetFields()
		cert := "-"
		if exp := meta[wire.MetaCertExpiry].GetStringValue(); exp != "" {
			cert = meta[wire.MetaCertDelivery].GetStringValue() + ", expires " + exp
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.GetNode().GetId(), meta[wire.MetaFlavour].GetStringValue(),
			or(cols["Listener"]), or(cols["RouteConfiguration"]), or(cols["Cluster"]), or(cols["ClusterLoadAssignment"]), nack,
			or(meta[wire.MetaIdentity].GetStringValue()), cert)
	}
	return tw.Flush()
}

func or(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
