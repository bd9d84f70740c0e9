package main

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

// measureCalls is how many calls make one measured split: about two of the
// client's reports (4 s) on an idle machine. At 90/10 the standard
// deviation of the measured share is under one percentage point.
const measureCalls = 1000

// clientProxy is the client's xDS node id: its routes decide the split.
const clientProxy = "productpage-v1.bookinfo"

// weightsPatch is a JSON patch of the weights of reviews-canary's second
// route ("everyone").
func weightsPatch(first, second int) string {
	return fmt.Sprintf(`[{"op": "replace", "path": "/spec/http/1/backends/0/weight", "value": %d}, `+
		`{"op": "replace", "path": "/spec/http/1/backends/1/weight", "value": %d}]`, first, second)
}

// tour shows the mesh at work: the live split and its edits, then what
// kubectl says about weft's resources, then mutual TLS and allow rules
// in force, then a canary moved to a new version, then failure recovery.
func (d *demo) tour(ctx context.Context) error {
	if d.traffic != nil {
		d.say("Commands are shown as you would type them in another shell (see the end of the tour);\n" +
			"    the demo runs them inside its network namespace, against the same servers.")
		if err := d.tourSplit(ctx); err != nil {
			return err
		}
	} else if err := d.startPods(ctx, withClient); err != nil {
		return err
	}
	d.tourStatus(ctx)
	if d.traffic != nil {
		if err := d.tourZeroTrust(ctx); err != nil {
			return err
		}
	}
	if err := d.tourCanary(ctx); err != nil {
		return err
	}
	return d.tourRecovery(ctx)
}

// tourSplit starts the client, measures the 90/10 split of the sample
// policy, edits it to 50/50 and measures again, and shows weft status.
func (d *demo) tourSplit(ctx context.Context) error {
	d.say("Starting productpage-v1, a proxyless gRPC client that calls reviews %d times a second\n"+
		"    (xds:///%s) and reports which pod answered ...", callsPerSecond, reviewsHost)
	if err := d.startPods(ctx, withClient); err != nil {
		return err
	}
	if err := waitSynced(ctx, statusAddr, proxies(withWorkloads, withClient)); err != nil {
		return err
	}
	if err := d.waitClientRoutes(ctx); err != nil { // what it runs now
		return err
	}
	d.say("The TrafficPolicy reviews-canary (config/samples) sends 90%% of reviews' calls to v1 and 10%% to v2. What the client sees:")
	if err := d.traffic.measure(ctx, d.out, time.Now(), measureCalls); err != nil {
		return err
	}
	d.say("Editing the policy to 50/50 with kubectl:")
	d.show(ctx, "patch", "trafficpolicy", "reviews-canary", "-n", "bookinfo", "--type=json", "-p", weightsPatch(50, 50))
	if err := d.waitPolicyInForce(ctx); err != nil {
		return err
	}
	d.show(ctx, "get", "trafficpolicy", "reviews-canary", "-n", "bookinfo")
	d.say("Every proxy acknowledged the new routes (Ready). What the client sees now:")
	if err := d.traffic.measure(ctx, d.out, time.Now(), measureCalls); err != nil {
		return err
	}
	d.say("The proxies connected to weft's xDS server (grpc-go's own xDS clients in the client and in both reviews),\n" +
		"    and what each acknowledged:")
	d.showWeftStatus(ctx)
	return nil
}

// waitPolicyInForce waits until reviews-canary is Ready for its
// generation (every proxy acknowledged it) and the client acknowledged
// routes other than it had.
func (d *demo) waitPolicyInForce(ctx context.Context) error {
	if err := d.waitCondition(ctx, "reviews-canary", meshv1.ConditionReady, metav1.ConditionTrue); err != nil {
		return err
	}
	return d.waitClientRoutes(ctx)
}

// waitClientRoutes waits until the client acknowledged routes other than
// those it had.
func (d *demo) waitClientRoutes(ctx context.Context) (err error) {
	d.routes, err = waitRoutesChanged(ctx, statusAddr, clientProxy, d.routes)
	return err
}

// showWeftStatus runs weft status against the xDS server, shown with the
// address the user's shell reaches it at.
func (d *demo) showWeftStatus(ctx context.Context) {
	fmt.Fprintf(d.out, "\n$ weft status --xds-address %s\n", d.userXDS())
	out, err := exec.CommandContext(ctx, d.weft, "status", "--xds-address", statusAddr).CombinedOutput()
	fmt.Fprint(d.out, string(out))
	if err != nil {
		fmt.Fprintf(d.out, "(weft status: %v)\n", err)
	}
}

// tourStatus shows what kubectl says about weft's resources, and a policy
// refused at admission.
func (d *demo) tourStatus(ctx context.Context) {
	d.show(ctx, "get", "meshservices,trafficpolicies,peerauthentications", "-A")
	d.show(ctx, "get", "meshservices", "-n", "bookinfo", "-o", "wide")
	d.show(ctx, "describe", "meshservice", "reviews", "-n", "bookinfo")
	d.show(ctx, "describe", "trafficpolicy", "reviews-canary", "-n", "bookinfo")
	d.say("A policy whose weights do not add up is refused at admission:")
	bad := "apiVersion: mesh.weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: bad-split, namespace: bookinfo}\n" +
		"spec:\n  targetRef: {name: reviews}\n  http:\n  - backends: [{subset: v1, weight: 80}, {subset: v2, weight: 10}]\n"
	d.show(ctx, "apply", "-f", "-", "<<"+bad)
}

// tourCanary moves the canary to a new version v4: the pods first, then a
// policy naming a subset that the MeshService does not define yet, then
// the subset.
func (d *demo) tourCanary(ctx context.Context) error {
	if d.traffic != nil {
		if err := d.rollOutV4(ctx); err != nil {
			return err
		}
	}
	d.say("Sending the canary's share to a subset v4 that reviews does not define: the policy says why it cannot be resolved:")
	d.show(ctx, "patch", "trafficpolicy", "reviews-canary", "-n", "bookinfo", "--type=json",
		"-p", `[{"op": "replace", "path": "/spec/http/1/backends/1/subset", "value": "v4"}]`)
	if err := d.waitCondition(ctx, "reviews-canary", meshv1.ConditionResolvedRefs, metav1.ConditionFalse); err != nil {
		return err
	}
	conditions := `jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}`
	d.show(ctx, "get", "trafficpolicy", "reviews-canary", "-n", "bookinfo", "-o", conditions)
	if d.traffic != nil {
		if err := d.measureUnresolved(ctx); err != nil {
			return err
		}
	}

	d.say("Adding subset v4 to the reviews MeshService resolves the policy without touching it:")
	d.show(ctx, "patch", "meshservice", "reviews", "-n", "bookinfo", "--type=json",
		"-p", `[{"op": "add", "path": "/spec/subsets/-", "value": {"name": "v4", "labels": {"version": "v4"}}}]`)
	if err := d.waitCondition(ctx, "reviews-canary", meshv1.ConditionResolvedRefs, metav1.ConditionTrue); err != nil {
		return err
	}
	if err := d.waitCondition(ctx, "reviews-canary", meshv1.ConditionReady, metav1.ConditionTrue); err != nil {
		return err
	}
	d.show(ctx, "get", "trafficpolicies", "-n", "bookinfo")
	if d.traffic == nil {
		return nil
	}
	if err := d.waitClientRoutes(ctx); err != nil {
		return err
	}
	d.say("The policy is in force again, now between v1 and v4. What the client sees:")
	return d.traffic.measure(ctx, d.out, time.Now(), measureCalls)
}

// rollOutV4 starts reviews-v4 and shows that the policy gives it nothing.
func (d *demo) rollOutV4(ctx context.Context) error {
	d.say("Rolling out reviews-v4 (the demo starts it and plays its kubelet). The policy routes to v1 and v2 only,\n" +
		"    so it gets no calls:")
	if err := d.startPods(ctx, duringTour); err != nil {
		return err
	}
	if err := d.waitEndpoints(ctx, "reviews", 3); err != nil {
		return err
	}
	if err := waitSynced(ctx, statusAddr, proxies(withWorkloads, withClient, duringTour)); err != nil {
		return err
	}
	return d.traffic.measure(ctx, d.out, time.Now(), measureCalls)
}

// measureUnresolved shows what the proxies do while the policy cannot be
// resolved: nothing changes for them. The mesh model keeps the policy's
// last good generation in force (a bad edit changes no traffic), so the
// split stays where it was, and v4 still gets nothing.
func (d *demo) measureUnresolved(ctx context.Context) error {
	d.say("Meanwhile the proxies keep the policy's last good generation (v1 and v2, 50/50): a policy that cannot\n" +
		"    be applied changes no traffic. What the client sees:")
	return d.traffic.measure(ctx, d.out, time.Now(), measureCalls)
}

// waitEndpoints waits until a MeshService counts n ready endpoints.
func (d *demo) waitEndpoints(ctx context.Context, name string, n int32) error {
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		ms := &meshv1.MeshService{}
		if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "bookinfo", Name: name}, ms); err != nil {
			return err
		}
		if ms.Status.Endpoints.Ready != n {
			return fmt.Errorf("MeshService %s has %d ready endpoints, want %d", name, ms.Status.Endpoints.Ready, n)
		}
		return nil
	})
}
