package main

import (
	"context"
	"fmt"
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
	"github.com/weftmesh/weft/internal/wire"
)

// What the demo's kubelet hands each pod for weft's xDS server, as the
// real kubelet would through projected volumes: the mesh root (which
// weft's controller made on its first start) and the pod's own
// ServiceAccount token for audience weft, bound to the pod and renewed
// before it expires.
const (
	xdsPort = "15012"
	// tokenTTL and tokenRenew: tokens live an hour and are replaced every
	// 20 minutes.
	tokenTTL   = time.Hour
	tokenRenew = 20 * time.Minute
)

// credentials remembers the pods whose tokens the demo renews.
type credentials struct {
	mu   sync.Mutex
	pods map[string]types.UID
	once sync.Once
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

// writeToken requests the pod's token and writes it (atomically: grpc-go
// may be reading the old one), and keeps renewing the tokens of the
// demo's pods while the demo runs.
func (d *demo) writeToken(ctx context.Context, p pod, uid types.UID) error {
	if err := d.requestToken(ctx, p.name, p.serviceAccount, uid); err != nil {
		return err
	}
	d.creds.mu.Lock()
	if d.creds.pods == nil {
		d.creds.pods = map[string]types.UID{}
	}
	d.creds.pods[p.name] = uid
	d.creds.mu.Unlock()
	d.creds.once.Do(func() { go d.renewTokens(ctx) })
	return nil
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

func (d *demo) renewTokens(ctx context.Context) {
	t := time.NewTicker(tokenRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.creds.mu.Lock()
		pods := make(map[string]types.UID, len(d.creds.pods))
		for k, v := range d.creds.pods {
			pods[k] = v
		}
		d.creds.mu.Unlock()
		for _, p := range demoPods {
			if uid, ok := pods[p.name]; ok {
				if err := d.requestToken(ctx, p.name, p.serviceAccount, uid); err != nil {
					fmt.Fprintln(os.Stderr, "demo:", err)
				}
			}
		}
	}
}
