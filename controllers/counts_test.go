package controllers_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/status"
)

// When every proxy of a MeshService is gone, or every endpoint, its
// writers can still write its status: the counts go back to zero (and the
// conditions written with them are written) rather than the API server
// refusing the write.
func TestCountsBackToZero(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, nil)
	ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080}}}}
	create(t, ms)
	for _, tc := range []struct {
		owner, field, condition string
		counts                  []any
		read                    func() any
	}{
		{controllers.FieldOwnerReadiness, "proxies", meshv1.ConditionReady,
			[]any{meshv1.ProxyCounts{Total: 2, Synced: 1}, meshv1.ProxyCounts{}}, func() any { return ms.Status.Proxies }},
		{controllers.FieldOwnerMeshService, "endpoints", meshv1.ConditionAccepted,
			[]any{meshv1.EndpointCounts{Ready: 1, Total: 3}, meshv1.EndpointCounts{}}, func() any { return ms.Status.Endpoints }},
	} {
		w := status.Writer{Client: env.Client, Scheme: env.Scheme, Owner: tc.owner}
		for _, counts := range tc.counts {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
				t.Fatal(err)
			}
			cond := metav1.Condition{Type: tc.condition, Status: metav1.ConditionFalse, Reason: "Pending", Message: "m", ObservedGeneration: ms.Generation}
			if _, err := w.Apply(ctx, ms, ms.Status.Conditions, map[string]any{tc.field: tc.read()}, status.Update{
				Conditions: []metav1.Condition{cond}, OwnedTypes: []string{tc.condition},
				Fields: map[string]any{tc.field: counts}}); err != nil {
				t.Fatalf("writing %s %+v: %v", tc.field, counts, err)
			}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
				t.Fatal(err)
			}
			if got := tc.read(); got != counts {
				t.Errorf("status.%s is %+v, want %+v", tc.field, got, counts)
			}
		}
	}
}
