package identity

import (
	"crypto/x509"
	"testing"
	"time"
)

// A replaced signing CA is trusted for AnchorRetention after it was first
// seen replaced, never past its own expiry, and then dropped; the current
// one always leads, and a certificate is listed once.
func TestNextAnchors(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ca := func(ttl time.Duration) *x509.Certificate {
		t.Helper()
		r, err := NewRoot("cluster.local", t0, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return r.Cert
	}
	a, b, c := ca(90*24*time.Hour), ca(2*24*time.Hour), ca(90*24*time.Hour)
	type want struct {
		cert  *x509.Certificate
		until time.Time
	}
	check := func(step string, got []Anchor, wants ...want) {
		t.Helper()
		ok := len(got) == len(wants)
		for i := 0; ok && i < len(got); i++ {
			ok = got[i].Cert.Equal(wants[i].cert) && got[i].Until.Equal(wants[i].until)
		}
		if !ok {
			t.Errorf("%s: got %d anchors %v", step, len(got), got)
		}
	}

	got := NextAnchors(nil, a, t0)
	check("first", got, want{a, time.Time{}})
	got = NextAnchors(got, a, t0.Add(time.Minute))
	check("unchanged", got, want{a, time.Time{}})

	got = NextAnchors(got, b, t0)
	check("b replaced a", got, want{b, time.Time{}}, want{a, t0.Add(AnchorRetention)})

	t1 := t0.Add(time.Hour)
	got = NextAnchors(NextAnchors(got, b, t1), c, t1)
	// b expires before the retention ends: trusted until its expiry.
	check("c replaced b", got, want{c, time.Time{}}, want{b, b.NotAfter}, want{a, t0.Add(AnchorRetention)})

	got = NextAnchors(got, c, t0.Add(3*24*time.Hour))
	check("b expired", got, want{c, time.Time{}}, want{a, t0.Add(AnchorRetention)})

	got = NextAnchors(got, c, t0.Add(AnchorRetention))
	check("a's retention over", got, want{c, time.Time{}})

	// The same certificate twice (two replicas' records): once, with the
	// later moment.
	dup := []Anchor{{Cert: c}, {Cert: a, Until: t0.Add(time.Hour)}, {Cert: a, Until: t0.Add(2 * time.Hour)}}
	check("duplicates", NextAnchors(dup, c, t0), want{c, time.Time{}}, want{a, t0.Add(2 * time.Hour)})
}
