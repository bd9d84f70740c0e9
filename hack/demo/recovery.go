package main

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

// recoveryPolicy is the tour's own policy on ratings, before retries,
// outlier detection and a timeout are added to it.
const recoveryPolicy = `apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: ratings-recovery, namespace: bookinfo}
spec:
  targetRef: {name: ratings}
  loadBalancer: {algorithm: RoundRobin}
`

// recoveryCalls is how many calls make one measured figure of the
// failure-recovery tour: enough for a sixth of them failing to show.
const recoveryCalls = 600

// tourRecovery shows failure recovery on ratings, which both reviews
// versions call for every call they serve: a version that fails a third
// of its calls, hidden by retries and then ejected by outlier detection;
// a slow version, cut by a timeout. The client's measured figures show
// each step. Both versions are rolled back at the end.
func (d *demo) tourRecovery(ctx context.Context) error {
	if d.traffic == nil {
		return nil
	}
	d.say("Failure recovery, on ratings: both reviews versions call it for every call they serve, so what ratings does\n" +
		"    shows in the client's figures. The reference policy ratings-everything (config/samples) gives way to the tour's own:")
	d.show(ctx, "delete", "trafficpolicy", "ratings-everything", "-n", "bookinfo")
	d.show(ctx, "apply", "-f", "-", "<<"+recoveryPolicy)
	if err := d.waitCondition(ctx, "ratings-recovery", meshv1.ConditionReady, metav1.ConditionTrue); err != nil {
		return err
	}

	d.say("Rolling out ratings-v2, which fails every third call with UNAVAILABLE. Round robin sends it half of ratings'\n" +
		"    calls, so about one call in six fails. What the client sees:")
	if err := d.startPods(ctx, forRecovery); err != nil {
		return err
	}
	if err := d.waitEndpoints(ctx, "ratings", 2); err != nil {
		return err
	}
	if err := d.waitReviewsSynced(ctx); err != nil {
		return err
	}
	if err := d.traffic.measure(ctx, d.out, time.Now(), recoveryCalls); err != nil {
		return err
	}

	d.say("Adding retries to the policy: reviews' channels retry a failed call on another endpoint, and the failures vanish:")
	if err := d.patchRecovery(ctx, `{"spec": {"retries": {"attempts": 3, "retryOn": ["unavailable"]}}}`); err != nil {
		return err
	}
	if err := d.traffic.measure(ctx, d.out, time.Now(), recoveryCalls); err != nil {
		return err
	}

	d.say("Replacing the retries with outlier detection: ratings-v2 fails more than 20%% of its calls, so it is ejected,\n" +
		"    and calls succeed the first time:")
	if err := d.patchRecovery(ctx, `{"spec": {"retries": null, "outlierDetection": {"failurePercentage": 20, "minimumHosts": 2, `+
		`"minimumRequests": 10, "interval": "1s", "baseEjectionTime": "5m", "maxEjectionPercent": 50}}}`); err != nil {
		return err
	}
	begin := time.Now()
	if err := d.waitCleanWindow(ctx, begin); err != nil {
		return err
	}
	d.say("ratings-v2 was ejected %v after the policy was in force. What the client sees now:", time.Since(begin).Round(100*time.Millisecond))
	if err := d.traffic.measure(ctx, d.out, time.Now(), recoveryCalls); err != nil {
		return err
	}

	d.say("Rolling ratings-v2 back, and out ratings-v3, which answers after 1.5 s: half of the client's calls wait that long\n" +
		"    (it calls one at a time, so its rate drops). What the client sees:")
	if err := d.removePod(ctx, "ratings-v2"); err != nil {
		return err
	}
	if err := d.startPods(ctx, forTimeout); err != nil {
		return err
	}
	if err := d.waitEndpoints(ctx, "ratings", 2); err != nil {
		return err
	}
	if err := d.waitReviewsSynced(ctx); err != nil {
		return err
	}
	if err := d.traffic.measure(ctx, d.out, time.Now(), 10); err != nil {
		return err
	}

	d.say("A 500 ms request timeout in the policy cuts the slow calls: they fail with DEADLINE_EXCEEDED after half a\n" +
		"    second instead of waiting three times as long:")
	if err := d.patchRecovery(ctx, `{"spec": {"timeouts": {"request": "500ms"}}}`); err != nil {
		return err
	}
	if err := d.traffic.measure(ctx, d.out, time.Now(), 40); err != nil {
		return err
	}

	d.say("Rolling ratings-v3 back: every call succeeds again, and quickly:")
	if err := d.removePod(ctx, "ratings-v3"); err != nil {
		return err
	}
	if err := d.waitEndpoints(ctx, "ratings", 1); err != nil {
		return err
	}
	if err := d.waitReviewsSynced(ctx); err != nil {
		return err
	}
	return d.traffic.measure(ctx, d.out, time.Now(), recoveryCalls)
}

// patchRecovery edits the tour's policy with kubectl (a merge patch) and
// waits until every proxy it shapes acknowledged the new generation.
func (d *demo) patchRecovery(ctx context.Context, patch string) error {
	d.show(ctx, "patch", "trafficpolicy", "ratings-recovery", "-n", "bookinfo", "--type=merge", "-p", patch)
	tp := &meshv1.TrafficPolicy{}
	if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "bookinfo", Name: "ratings-recovery"}, tp); err != nil {
		return err
	}
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := d.env.Client.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
			return err
		}
		return readyAt(tp.Status.Conditions, tp.Generation)
	})
}

// waitReviewsSynced waits until every proxy acknowledged what it was
// sent: the reviews servers' channels know ratings' endpoints.
func (d *demo) waitReviewsSynced(ctx context.Context) error {
	return waitSynced(ctx, statusAddr, proxies(withWorkloads, withClient, duringTour))
}

// waitCleanWindow waits for the first client report from after begin with
// calls and no failure.
func (d *demo) waitCleanWindow(ctx context.Context, begin time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for from := begin; ; {
		w, err := d.traffic.next(ctx, from)
		if err != nil {
			return fmt.Errorf("waiting for a report without failures: %w", err)
		}
		fmt.Fprintln(d.out, w.line())
		if w.Failed == 0 && w.total() > 0 {
			return nil
		}
		from = w.To
	}
}
