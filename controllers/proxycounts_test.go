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

// A MeshService's status.proxies, applied as the readiness writer applies
// it, goes from counts to zeros through the real API server (its last
// proxy left): the zeros are stored, not refused.
func TestProxyCountsDropToZero(t *testing.T) {
	ctx := context.Background()
	ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "proxies-to-zero"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "x", Ports: []meshv1.MeshServicePort{{Port: 80, Protocol: meshv1.ProtocolHTTP}}}}
	if err := env.Client.Create(ctx, ms); err != nil {
		t.Fatal(err)
	}
	w := status.Writer{Client: env.Client, Scheme: env.Scheme, Owner: controllers.FieldOwnerReadiness}
	ready := metav1.Condition{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonSynced, Message: "test"}
	for _, counts := range []meshv1.ProxyCounts{{Total: 1, Synced: 1}, {}} {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Apply(ctx, ms, ms.Status.Conditions, map[string]any{"proxies": controllers.ProxyCountsField(ms.Status.Proxies)},
			status.Update{OwnedTypes: []string{meshv1.ConditionReady}, Conditions: []metav1.Condition{ready},
				Fields: map[string]any{"proxies": controllers.ProxyCountsField(counts)}}); err != nil {
			t.Fatalf("applying proxies %+v: %v", counts, err)
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
			t.Fatal(err)
		}
		if ms.Status.Proxies != counts {
			t.Fatalf("status.proxies is %+v after applying %+v", ms.Status.Proxies, counts)
		}
	}
}
