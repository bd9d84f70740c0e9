package casource

import (
	"strings"
	"testing"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
)

func TestConfigNamesTheFlagThatIsWrong(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string // empty: valid
	}{
		{Config{Source: Builtin}, ""},
		{Config{Source: External}, ""},
		{Config{Source: CertManager, Issuer: cmmeta.IssuerReference{Name: "corp", Kind: "ClusterIssuer"}}, ""},
		{Config{Source: "vault"}, "--ca"},
		{Config{Source: CertManager}, "--issuer-name"},
		{Config{Source: CertManager, Issuer: cmmeta.IssuerReference{Name: "corp"}}, "--issuer-kind"},
	} {
		err := tc.c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.c, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error naming %s", tc.c, err, tc.want)
		}
	}
}

// Each source gives what the controller wires: weft's CA and no requests,
// or the issuer's requests and no CA.
func TestSourcesGiveTheirParts(t *testing.T) {
	own, err := New(Config{Source: Builtin, Namespace: "weft-system", TrustDomain: "cluster.local", Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	if own.Root == nil || own.Root.External || own.Leaves(0, 1, 1, logr.Discard()) != nil {
		t.Fatal("the built-in source has no CA of its own, or asks an issuer")
	}
	ext, err := New(Config{Source: External, Namespace: "weft-system", TrustDomain: "cluster.local", Log: logr.Discard()})
	if err != nil || ext.Root == nil || !ext.Root.External {
		t.Fatalf("the external source does not wait for its CA (%v)", err)
	}
	cm, err := New(Config{Source: CertManager, Namespace: "weft-system", Issuer: cmmeta.IssuerReference{Name: "corp", Kind: "ClusterIssuer"},
		TrustBundle: "corp-roots", Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Root != nil || cm.Leaves(0, 1, 1, logr.Discard()) == nil || cm.Bundle() != nil {
		t.Fatal("the cert-manager source holds a CA, asks no issuer, or has a bundle before loading one")
	}
	if cm.loader.Name != "corp-roots" || cm.requester.IssuerRef.Name != "corp" {
		t.Fatalf("the cert-manager source reads %q and asks %q", cm.loader.Name, cm.requester.IssuerRef.Name)
	}
}
