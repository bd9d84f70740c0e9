package test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

// TestTrustStateThroughARotation: the controller binary, with a built-in
// root that expires in 18 days, keeps the MeshTrust mesh: one anchor,
// CAExpiring=True naming it, a TrustExpiring Event; `kubectl get
// meshtrust` shows it and `weft ca status --namespace shop` fails saying
// so while agreeing with the bundle the namespace mounts. `weft ca rotate`
// moves the phase to TrustingBoth with both anchors and the old root
// signing, `weft ca promote` to SigningWithNew; `weft ca retire`
// back to Steady with the new root alone, nothing expiring, and `weft ca
// status` exits 0 once the namespace mounts it. Each step is a CARotated
// Event on the MeshTrust naming what changed.
func TestTrustStateThroughARotation(t *testing.T) {
	weft := testenv.Binary(t, "weft")
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const ns = "weft-system"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{wire.LabelInject: wire.InjectEnabled}}}))
	// A root made 12 days ago for 30: 18 days left.
	old, err := identity.NewRoot("cluster.local", time.Now().Add(-12*24*time.Hour), 30*24*time.Hour)
	must(err)
	keyDER, err := x509MarshalKey(old)
	must(err)
	// As weft makes its built-in root (the label lets weft ca rotate it).
	must(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: identity.RootSecretName,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "weft"}}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: identity.EncodeCerts([][]byte{old.Cert.Raw}), corev1.TLSPrivateKeyKey: keyDER,
			identity.BundleKey: identity.EncodeCerts([][]byte{old.Cert.Raw})}}))

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(env.Kubeconfig(kubeconfig))
	runWeftController(t, weft, filepath.Join(dir, "weft.log"), "--kubeconfig="+kubeconfig, "--mesh-namespace="+ns, "--webhook-port=0",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=console")
	caStatus := func() (string, error) {
		out, err := exec.CommandContext(ctx, weft, "ca", "status", "--kubeconfig="+kubeconfig, "--namespace=shop").CombinedOutput()
		return string(out), err
	}
	waitTrust := func(what string, check func(meshv1.MeshTrustStatus) error) meshv1.MeshTrustStatus {
		t.Helper()
		var mt meshv1.MeshTrust
		if err := testenv.Eventually(ctx, 90*time.Second, func(ctx context.Context) error {
			if err := c.Get(ctx, client.ObjectKey{Name: meshv1.MeshTrustName}, &mt); err != nil {
				return err
			}
			return check(mt.Status)
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return mt.Status
	}
	expiring := func(st meshv1.MeshTrustStatus, want metav1.ConditionStatus) error {
		if c := meta.FindStatusCondition(st.Conditions, meshv1.ConditionCAExpiring); c == nil || c.Status != want {
			return fmt.Errorf("CAExpiring is %+v, want %s", c, want)
		}
		return nil
	}

	// 18 days left: the warning, on the status and as an Event.
	st := waitTrust("the root near its expiry", func(st meshv1.MeshTrustStatus) error {
		if st.Phase != meshv1.TrustSteady || len(st.Anchors) != 1 || st.SigningCA == nil || st.Source != "builtin" {
			return fmt.Errorf("phase %q, %d anchors, signing %v, source %q", st.Phase, len(st.Anchors), st.SigningCA, st.Source)
		}
		return expiring(st, metav1.ConditionTrue)
	})
	if c := meta.FindStatusCondition(st.Conditions, meshv1.ConditionCAExpiring); !strings.Contains(c.Message, "in 17 days") && !strings.Contains(c.Message, "in 18 days") {
		t.Errorf("CAExpiring says %q, want the days left", c.Message)
	}
	must(testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := c.List(ctx, &list); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Regarding.Kind == "MeshTrust" && ev.Regarding.Name == meshv1.MeshTrustName && ev.Reason == wire.EventTrustExpiring &&
				ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Note, "expires at") {
				return nil
			}
		}
		return errors.New("no TrustExpiring Event on the MeshTrust")
	}))
	// rotated waits for the CARotated Event on the MeshTrust whose note
	// holds want.
	rotated := func(want string) {
		t.Helper()
		must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			var list eventsv1.EventList
			if err := c.List(ctx, &list); err != nil {
				return err
			}
			var notes []string
			for _, ev := range list.Items {
				if ev.Regarding.Kind == "MeshTrust" && ev.Reason == wire.EventCARotated {
					if ev.Type == corev1.EventTypeNormal && strings.Contains(ev.Note, want) {
						return nil
					}
					notes = append(notes, ev.Note)
				}
			}
			return fmt.Errorf("no CARotated Event on the MeshTrust says %q; those there: %q", want, notes)
		}))
	}
	kubectl := filepath.Join(env.AssetsDir(), "kubectl")
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig="+kubeconfig, "get", "meshtrust").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Steady") || !strings.Contains(string(out), "True") {
		t.Errorf("kubectl get meshtrust: %v\n%s", err, out)
	}
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		out, err := caStatus()
		if err == nil || !regexp.MustCompile(`CAExpiring:\s+True`).MatchString(out) || !strings.Contains(out, "Namespace shop:") || !strings.Contains(out, "mounts these anchors") {
			return fmt.Errorf("weft ca status (%v):\n%s", err, out)
		}
		return nil
	}))

	// Rotate: both trusted, the old one still signs.
	out, err = exec.CommandContext(ctx, weft, "ca", "rotate", "--kubeconfig="+kubeconfig, "--mesh-namespace="+ns).CombinedOutput()
	must(errors.Join(err, errorIf(err != nil, string(out))))
	waitTrust("after the rotation", func(st meshv1.MeshTrustStatus) error {
		if st.Phase != meshv1.TrustTrustingBoth || len(st.Anchors) != 2 || st.SigningCA == nil || st.SigningCA.SHA256 != st.Anchors[0].SHA256 {
			return fmt.Errorf("phase %q with %d anchors", st.Phase, len(st.Anchors))
		}
		return expiring(st, metav1.ConditionTrue)
	})
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		out, err := caStatus()
		if !regexp.MustCompile(`Phase:\s+TrustingBoth\nNext:\s+once every meshed namespace mounts these anchors`).MatchString(out) || !strings.Contains(out, "mounts these anchors") {
			return fmt.Errorf("weft ca status (%v):\n%s", err, out)
		}
		return nil
	}))

	// Promote: the new one signs.
	out, err = exec.CommandContext(ctx, weft, "ca", "promote", "--kubeconfig="+kubeconfig, "--mesh-namespace="+ns).CombinedOutput()
	must(errors.Join(err, errorIf(err != nil, string(out))))
	waitTrust("after the promotion", func(st meshv1.MeshTrustStatus) error {
		if st.Phase != meshv1.TrustSigningWithNew || len(st.Anchors) != 2 || st.SigningCA == nil || st.SigningCA.SHA256 == st.Anchors[0].SHA256 {
			return fmt.Errorf("phase %q with %d anchors", st.Phase, len(st.Anchors))
		}
		return expiring(st, metav1.ConditionTrue) // the old root is still trusted
	})
	rotated("phase SigningWithNew with 2 anchor(s)")
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		out, err := caStatus()
		if !regexp.MustCompile(`Phase:\s+SigningWithNew`).MatchString(out) || !strings.Contains(out, "mounts these anchors") {
			return fmt.Errorf("weft ca status (%v):\n%s", err, out)
		}
		return nil
	}))

	// Retire: the new root alone, nothing expiring.
	out, err = exec.CommandContext(ctx, weft, "ca", "retire", "--kubeconfig="+kubeconfig, "--mesh-namespace="+ns).CombinedOutput()
	must(errors.Join(err, errorIf(err != nil, string(out))))
	waitTrust("after retiring the old root", func(st meshv1.MeshTrustStatus) error {
		if st.Phase != meshv1.TrustSteady || len(st.Anchors) != 1 || st.SigningCA == nil || st.SigningCA.SHA256 != st.Anchors[0].SHA256 {
			return fmt.Errorf("phase %q with %d anchors", st.Phase, len(st.Anchors))
		}
		return expiring(st, metav1.ConditionFalse)
	})
	rotated(fmt.Sprintf("no longer trusts %q (serial %s,", st.Anchors[0].Subject, st.Anchors[0].SerialNumber))
	must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		out, err := caStatus()
		if err != nil || !regexp.MustCompile(`CAExpiring:\s+False`).MatchString(out) || !strings.Contains(out, "mounts these anchors") {
			return fmt.Errorf("weft ca status (%v):\n%s", err, out)
		}
		return nil
	}))
}

func errorIf(cond bool, msg string) error {
	if cond {
		return errors.New(msg)
	}
	return nil
}

// x509MarshalKey is a CA's key as PEM (PKCS #8).
func x509MarshalKey(ca *identity.CA) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// runWeftController runs `weft controller` with args until the test ends,
// its log in logPath; it must exit cleanly on SIGTERM within 30 s. The
// log's end is shown when the test failed; check, when set, reads the
// whole log after the stop.
func runWeftController(t *testing.T, weft, logPath string, args ...string) (stop func(check func(log []byte))) {
	t.Helper()
	p := testenv.StartProcess(t, logPath, weft, append([]string{"controller"}, args...)...)
	var once sync.Once
	stop = func(check func([]byte)) {
		once.Do(func() {
			if err := p.Stop(30 * time.Second); err != nil {
				t.Errorf("the controller after SIGTERM: %v", err)
			}
			b := p.Log()
			if check != nil {
				check(b)
			}
			if t.Failed() {
				t.Logf("the controller's log (the end):\n%s", tail(b, 8000))
			}
		})
	}
	t.Cleanup(func() { stop(nil) })
	return stop
}
