package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv/hostile"
)

// seed is WEFT_SEED, or the time: printed, so that a failure can be
// replayed.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("WEFT_SEED"); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("WEFT_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (WEFT_SEED=%d replays it)", s, s)
	return s
}

// refused sends a hostile case to the API server (a server-side dry run
// with strict field validation, as kubectl sends) and says what is wrong
// with the answer, or "" when the API server refused it naming the field.
func refused(ctx context.Context, c client.Client, hc hostile.Case) string {
	err := c.Create(ctx, &unstructured.Unstructured{Object: hc.Object}, client.DryRunAll, client.FieldValidation("Strict"))
	switch {
	case err == nil:
		return "the API server admitted it"
	case !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err):
		return "refused, but not as invalid: " + err.Error()
	case !strings.Contains(err.Error(), hc.Field):
		msg := err.Error()
		if len(msg) > 2000 {
			msg = msg[:2000] + "…"
		}
		return "the refusal does not name " + hc.Field + ": " + msg
	}
	return ""
}

// TestOversizedInputsRefused: every string of every kind at 1 MiB, every
// list at 10,000 items and every map at 10,000 entries is refused by the
// schema's bounds, naming the field.
func TestOversizedInputsRefused(t *testing.T) {
	g, err := hostile.New(filepath.Join(env.Root, "config", "crd", "bases"), 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, kind := range g.Kinds() {
		cases := g.Oversized(kind, "default")
		if len(cases) < 10 {
			t.Fatalf("%s: only %d oversized cases", kind, len(cases))
		}
		for _, hc := range cases {
			start := time.Now()
			if why := refused(ctx, env.Client, hc); why != "" {
				t.Errorf("%s %s: %s", kind, hc.What, why)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Logf("%s %s: answered in %v", kind, hc.What, d)
			}
		}
	}
}

// TestFuzzedObjectsRefused: malformed objects of each kind from a seeded
// random source (each a valid object broken in one place against its
// schema or a CEL rule) are refused, naming the field. The controller
// judges the rest (test/reliability's TestHostileObjects sends those).
func TestFuzzedObjectsRefused(t *testing.T) {
	g, err := hostile.New(filepath.Join(env.Root, "config", "crd", "bases"), seed(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, kind := range g.Kinds() {
		failed := 0
		for _, hc := range g.Cases(kind, "default", 200) {
			if why := refused(ctx, env.Client, hc); why != "" {
				failed++
				if failed <= 20 {
					t.Errorf("%s %s: %s", kind, hc.What, why)
				}
			}
		}
		if failed > 0 {
			t.Errorf("%s: %d of 200 not refused as they should be", kind, failed)
		}
	}
}
