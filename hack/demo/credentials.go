package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testenv/kubelet"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// What the demo's kubelet hands each pod, as the real kubelet would
// through projected volumes: for weft's xDS server, the mesh root (which
// weft's controller made on its first start) and the pod's own
// ServiceAccount token for audience weft, bound to the pod; for mutual TLS
// with other workloads, a pod certificate that weft signs (asked for with
// a PodCertificateRequest) and the root bundle weft publishes into the
// namespace. Both are renewed before they expire.
const (
	xdsPort = "15012"
	// tokenTTL and certTTL: tokens and certificates live an hour;
	// renewEvery: both are replaced every 20 minutes.
	tokenTTL   = time.Hour
	certTTL    = time.Hour
	renewEvery = 20 * time.Minute
)

// credentials remembers the pods whose tokens and certificates the demo
// renews.
type credentials struct {
	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	kubelet *kubelet.Kubelet
	once    sync.Once
}

func (d *demo) rootCAFile() string { return filepath.Join(d.dir, "mesh-root.pem") }

func (d *demo) tokenFile(p pod) string { return filepath.Join(d.dir, "token-"+p.name) }

// writeRootCA waits for weft to make the mesh root and writes the trusted
// bundle where the pods' bootstraps read it.
func (d *demo) writeRootCA(ctx context.Context) error {
	var bundle []byte
	err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var s corev1.Secret
		if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: identity.RootSecretName}, &s); err != nil {
			return fmt.Errorf("weft has not made the mesh root yet: %w", err)
		}
		bundle = s.Data[identity.BundleKey]
		return nil
	})
	if err != nil {
		return err
	}
	return os.WriteFile(d.rootCAFile(), bundle, 0o644)
}

// certsOf is where a pod's certificate files are.
func (d *demo) certsOf(p pod) xdstest.Certs {
	return xdstest.Certs{Dir: filepath.Join(d.dir, "certs", p.name)}
}

// writeCredentials requests the pod's token and certificate and writes
// them (atomically: grpc-go may be reading the old ones), and keeps
// renewing those of the demo's pods while the demo runs.
func (d *demo) writeCredentials(ctx context.Context, p pod, obj *corev1.Pod) error {
	if err := d.requestToken(ctx, p.name, p.serviceAccount, obj.UID); err != nil {
		return err
	}
	kl, err := d.kubelet(ctx)
	if err != nil {
		return err
	}
	if _, err := kl.Certify(ctx, obj); err != nil {
		return fmt.Errorf("the certificate of pod %s: %w", p.name, err)
	}
	d.creds.mu.Lock()
	if d.creds.pods == nil {
		d.creds.pods = map[string]*corev1.Pod{}
	}
	d.creds.pods[p.name] = obj
	d.creds.mu.Unlock()
	d.creds.once.Do(func() { go d.renew(ctx) })
	return nil
}

// kubelet is the demo node's certificate-asking part, made on first use:
// the node must exist, and weft must have published the root bundle into
// the pods' namespace.
func (d *demo) kubelet(ctx context.Context) (*kubelet.Kubelet, error) {
	d.creds.mu.Lock()
	defer d.creds.mu.Unlock()
	if d.creds.kubelet != nil {
		return d.creds.kubelet, nil
	}
	node := &corev1.Node{}
	if err := d.env.Client.Get(ctx, client.ObjectKey{Name: "demo-node"}, node); err != nil {
		return nil, fmt.Errorf("the demo node: %w", err)
	}
	err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "bookinfo", Name: wire.BundleConfigMap}, &corev1.ConfigMap{}); err != nil {
			return fmt.Errorf("weft has not published the root bundle into bookinfo yet: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.creds.kubelet = &kubelet.Kubelet{Client: d.env.Client, Node: node, Dir: filepath.Join(d.dir, "certs"), Lifetime: certTTL}
	return d.creds.kubelet, nil
}

func (d *demo) requestToken(ctx context.Context, name, serviceAccount string, uid types.UID) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: serviceAccount}}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{wire.TokenAudience}, ExpirationSeconds: ptr.To(int64(tokenTTL / time.Second)),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: name, UID: uid},
	}}
	if err := d.env.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return fmt.Errorf("requesting pod %s's token: %w", name, err)
	}
	path := filepath.Join(d.dir, "token-"+name)
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(tr.Status.Token), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// renew replaces the tokens and certificates of the running pods every
// renewEvery until ctx ends.
func (d *demo) renew(ctx context.Context) {
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.creds.mu.Lock()
		pods := maps.Clone(d.creds.pods)
		kl := d.creds.kubelet
		d.creds.mu.Unlock()
		for _, p := range demoPods {
			obj, ok := pods[p.name]
			if !ok {
				continue
			}
			if err := d.requestToken(ctx, p.name, p.serviceAccount, obj.UID); err != nil {
				fmt.Fprintln(os.Stderr, "demo:", err)
			}
			if _, err := kl.Certify(ctx, obj); err != nil {
				fmt.Fprintln(os.Stderr, "demo: renewing the certificate of", p.name+":", err)
			}
		}
	}
}
