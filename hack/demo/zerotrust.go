package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// directCall is one call the zero-trust tour makes straight to a reviews
// pod with a caller's own certificate, and what must come of it.
type directCall struct {
	caller, method string
	refused        bool // PERMISSION_DENIED, from the server's allow rules
}

// directCalls: the product page may call Get; ratings' identity may not
// call reviews at all; the product page may not call Stats.
var directCalls = []directCall{
	{"productpage-v1", getMethod, false},
	{"ratings-v1", getMethod, true},
	{"productpage-v1", statsMethod, true},
}

// tourZeroTrust shows mutual TLS in force and the allow rules of reviews
// enforced by its servers: a call refused for the caller's identity and
// one refused for its path.
func (d *demo) tourZeroTrust(ctx context.Context) error {
	d.say("The mesh-wide PeerAuthentication makes every port STRICT, and it is in force: every workload has a\n" +
		"    certificate weft signed for its ServiceAccount, and their servers take mutual TLS only. Ready counts\n" +
		"    the proxies it shapes, and what they acknowledged:")
	if err := d.waitPeerAuthReady(ctx); err != nil {
		return err
	}
	d.show(ctx, "get", "peerauthentication", "mesh-default", "-n", "weft-system", "-o", conditionOf(meshv1.ConditionReady))
	d.say("Only productpage may call reviews, and only its method Get (config/samples). The servers of reviews\n" +
		"    check that on every call, on the caller's certificate, path and method:")
	if err := d.waitRulesEnforced(ctx, "reviews"); err != nil {
		return err
	}
	d.show(ctx, "get", "meshservice", "reviews", "-n", "bookinfo", "-o", conditionOf(meshv1.ConditionRulesEnforced))

	addr := net.JoinHostPort(podNamed("reviews-v1").ip, servePort)
	d.say("Calls straight to reviews-v1 (%s), over mutual TLS with each caller's own certificate, as a workload\n"+
		"    that ignores the mesh's configuration would make them: the server itself refuses what the rule does not allow.", addr)
	for _, c := range directCalls {
		p := podNamed(c.caller)
		got, err := d.callDirect(ctx, p, addr, c.method)
		line := fmt.Sprintf("    %s (%s) calls %s: ", p.name, wire.SPIFFEID(wire.DefaultTrustDomain, "bookinfo", p.serviceAccount), c.method)
		switch {
		case err == nil:
			line += fmt.Sprintf("answered %q", got)
		case status.Code(err) == codes.PermissionDenied:
			line += "refused, " + status.Code(err).String() + ": " + status.Convert(err).Message()
		default:
			line += "failed: " + err.Error()
		}
		fmt.Fprintln(d.out, line)
		if refused := status.Code(err) == codes.PermissionDenied; refused != c.refused || (!refused && err != nil) {
			return fmt.Errorf("%s calling %s on %s directly: %v, want refused=%v", p.name, c.method, addr, err, c.refused)
		}
	}
	return nil
}

// callDirect makes one call to addr with a pod's certificate files,
// without the mesh's configuration.
func (d *demo) callDirect(ctx context.Context, p pod, addr, method string) (string, error) {
	cfg, err := xdstest.DirectTLS(d.certsOf(p))
	if err != nil {
		return "", fmt.Errorf("the certificate of %s: %w", p.name, err)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(grpccreds.NewTLS(cfg)))
	if err != nil {
		return "", err
	}
	defer cc.Close()
	return invoke(ctx, cc, method)
}

func podNamed(name string) pod {
	for _, p := range demoPods {
		if p.name == name {
			return p
		}
	}
	panic("no demo pod " + name)
}

// conditionOf is a kubectl jsonpath that prints one condition.
func conditionOf(condType string) string {
	return `jsonpath={range .status.conditions[?(@.type=="` + condType + `")]}{.type}={.status} {.reason}: {.message}{"\n"}{end}`
}

// waitPeerAuthReady waits until the mesh-wide PeerAuthentication is Ready
// for its generation.
func (d *demo) waitPeerAuthReady(ctx context.Context) error {
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		pa := &meshv1.PeerAuthentication{}
		if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "mesh-default"}, pa); err != nil {
			return err
		}
		return readyAt(pa.Status.Conditions, pa.Generation)
	})
}

// waitRulesEnforced waits until a MeshService says its allow rules hold.
func (d *demo) waitRulesEnforced(ctx context.Context, name string) error {
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		ms := &meshv1.MeshService{}
		if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "bookinfo", Name: name}, ms); err != nil {
			return err
		}
		c := meta.FindStatusCondition(ms.Status.Conditions, meshv1.ConditionRulesEnforced)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != ms.Generation {
			return fmt.Errorf("MeshService %s: RulesEnforced is %+v", name, c)
		}
		return nil
	})
}
