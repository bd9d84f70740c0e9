// Package auth authenticates the proxies that connect to weft's xDS
// server. A stream proves who it is with the projected ServiceAccount
// token of its pod (audience "weft"), sent as a bearer token on every
// connect and checked with a TokenReview; the result is cached until the
// token expires, so that a reconnect storm does not flood the API server.
// The identity is the token's pod; a proxy may then only speak as that pod
// (its node id must name it). Without a token, a client certificate from
// the mesh CA proves a ServiceAccount, and the proxy may speak as a pod
// that runs as it.
package auth

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/wire"
)

// Identity is the pod a stream proved to be.
type Identity struct {
	Namespace      string
	ServiceAccount string
	Pod            string
	PodUID         string
}

// NodeID is the xDS node id a proxy of this pod must use:
// "<pod>.<namespace>".
func (id Identity) NodeID() string { return wire.NodeID(id.Pod, id.Namespace) }

// Reviewer asks the API server about a token.
type Reviewer interface {
	Review(ctx context.Context, token string, audiences []string) (authenticationv1.TokenReviewStatus, error)
}

// ClientReviewer reviews tokens with a TokenReview through a client.
type ClientReviewer struct{ Client client.Client }

// Review creates a TokenReview.
func (r ClientReviewer) Review(ctx context.Context, token string, audiences []string) (authenticationv1.TokenReviewStatus, error) {
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences}}
	if err := r.Client.Create(ctx, tr); err != nil {
		return authenticationv1.TokenReviewStatus{}, fmt.Errorf("reviewing a proxy's token: %w", err)
	}
	return tr.Status, nil
}

// Authenticator checks tokens and caches what it learned.
type Authenticator struct {
	Reviewer Reviewer
	// Pods, when set (the manager's cache), is asked on every connect
	// whether the token's pod still exists, so that a remembered review
	// does not outlive the pod.
	Pods client.Reader
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Roots, when set, lets a stream prove itself with a client
	// certificate from the mesh CA instead of a token: the roots it must
	// chain to (the mesh's trusted bundle, read on every connect) and the
	// trust domain its SPIFFE ID must be in. A certificate names a
	// ServiceAccount, not a pod: such a stream may use the node id of any
	// pod of its namespace that runs as that ServiceAccount.
	Roots       func() *x509.CertPool
	TrustDomain string

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	id      Identity
	err     error
	expires time.Time
}

// Cache bounds: a good result lives until the token expires but no
// longer than maxCache; a refusal is remembered briefly.
const (
	maxCache     = 10 * time.Minute
	refusalCache = 5 * time.Second
)

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Authenticate returns the pod a token proves, or an Unauthenticated
// error that says why (never the token).
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Identity, error) {
	id, err := a.reviewed(ctx, token)
	if err != nil || a.Pods == nil {
		return id, err
	}
	var pod corev1.Pod
	if err := a.Pods.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Pod}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return Identity{}, status.Errorf(codes.Unauthenticated, "the token's pod %s/%s is gone", id.Namespace, id.Pod)
		}
		return Identity{}, status.Error(codes.Unavailable, err.Error())
	}
	if id.PodUID != "" && string(pod.UID) != id.PodUID {
		return Identity{}, status.Errorf(codes.Unauthenticated, "the token's pod %s/%s is gone (another pod has its name)", id.Namespace, id.Pod)
	}
	return id, nil
}

// reviewed returns what the API server said of a token, from the cache
// while it holds.
func (a *Authenticator) reviewed(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		msg := "no token: send the pod's projected ServiceAccount token (audience weft) as a bearer token"
		if a.Roots != nil {
			msg += ", or present a client certificate from the mesh CA"
		}
		return Identity{}, status.Error(codes.Unauthenticated, msg)
	}
	key := sha256.Sum256([]byte(token))
	now := a.now()
	a.mu.Lock()
	if c, ok := a.cache[key]; ok && now.Before(c.expires) {
		a.mu.Unlock()
		return c.id, c.err
	}
	a.mu.Unlock()

	id, err := a.review(ctx, token)
	expires := now.Add(refusalCache)
	if err == nil {
		expires = now.Add(maxCache)
		if exp, ok := tokenExpiry(token); ok && exp.Before(expires) {
			expires = exp
		}
	} else if status.Code(err) != codes.Unauthenticated {
		return Identity{}, err // the API server failed: do not remember
	}
	a.mu.Lock()
	if a.cache == nil {
		a.cache = map[[32]byte]cached{}
	}
	for k, c := range a.cache { // keep the cache to live entries
		if !now.Before(c.expires) {
			delete(a.cache, k)
		}
	}
	a.cache[key] = cached{id: id, err: err, expires: expires}
	a.mu.Unlock()
	return id, err
}

func (a *Authenticator) review(ctx context.Context, token string) (Identity, error) {
	st, err := a.Reviewer.Review(ctx, token, []string{wire.TokenAudience})
	if err != nil {
		return Identity{}, status.Error(codes.Unavailable, err.Error())
	}
	if !st.Authenticated {
		why := st.Error
		if why == "" {
			why = "the API server did not accept it"
		}
		return Identity{}, status.Errorf(codes.Unauthenticated, "the token was refused: %s", why)
	}
	if len(st.Audiences) > 0 && !contains(st.Audiences, wire.TokenAudience) {
		return Identity{}, status.Errorf(codes.Unauthenticated, "the token is not for audience %q", wire.TokenAudience)
	}
	parts := strings.Split(st.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" {
		return Identity{}, status.Errorf(codes.Unauthenticated, "the token is %q's, not a ServiceAccount's", st.User.Username)
	}
	id := Identity{Namespace: parts[2], ServiceAccount: parts[3]}
	if v := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(v) == 1 {
		id.Pod = v[0]
	}
	if v := st.User.Extra["authentication.kubernetes.io/pod-uid"]; len(v) == 1 {
		id.PodUID = v[0]
	}
	if id.Pod == "" {
		return Identity{}, status.Error(codes.Unauthenticated, "the token is not bound to a pod: use the pod's projected token")
	}
	return id, nil
}

// tokenExpiry reads a JWT's exp claim, unverified: it only bounds how long
// a review that the API server made is remembered.
func tokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type identityKey struct{}

// FromContext returns the identity a stream proved.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// authenticateCall proves a call by its bearer token or, without one, by
// the client certificate of its TLS connection.
func (a *Authenticator) authenticateCall(ctx context.Context) (Identity, error) {
	tok := bearer(ctx)
	if tok == "" && a.Roots != nil {
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				return a.certificate(info.State.PeerCertificates)
			}
		}
	}
	return a.Authenticate(ctx, tok)
}

// certificate returns the ServiceAccount a client certificate from the
// mesh CA names.
func (a *Authenticator) certificate(chain []*x509.Certificate) (Identity, error) {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: a.Roots(), Intermediates: inter, CurrentTime: a.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "the client certificate is not the mesh CA's: %v", err)
	}
	id, err := identity.IDOf(chain[0])
	if err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "the client certificate names no workload: %v", err)
	}
	if id.TrustDomain != a.TrustDomain {
		return Identity{}, status.Errorf(codes.Unauthenticated, "the client certificate is of trust domain %q, not %q", id.TrustDomain, a.TrustDomain)
	}
	return Identity{Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}, nil
}

// BindNode checks the node id a stream uses against what it proved, and
// returns the identity with its pod: a token names the pod; a certificate
// names a ServiceAccount, and the node id's pod must run as it.
func (a *Authenticator) BindNode(ctx context.Context, id Identity, nodeID string) (Identity, error) {
	if id.Pod != "" {
		return id, CheckNode(id, nodeID)
	}
	podName, ns, ok := wire.ParseNodeID(nodeID)
	if !ok || ns != id.Namespace {
		return Identity{}, status.Errorf(codes.PermissionDenied,
			"the stream proved ServiceAccount %s/%s, and may only use the node id of a pod of namespace %s (\"<pod>.%s\"), not %q",
			id.Namespace, id.ServiceAccount, id.Namespace, id.Namespace, nodeID)
	}
	if a.Pods == nil {
		return Identity{}, status.Error(codes.PermissionDenied, "cannot check the node id's pod")
	}
	var pod corev1.Pod
	if err := a.Pods.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: podName}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return Identity{}, status.Errorf(codes.PermissionDenied, "node id %q names no pod", nodeID)
		}
		return Identity{}, status.Error(codes.Unavailable, err.Error())
	}
	if sa := cmp.Or(pod.Spec.ServiceAccountName, "default"); sa != id.ServiceAccount {
		return Identity{}, status.Errorf(codes.PermissionDenied, "pod %s/%s runs as ServiceAccount %s, and the stream proved %s",
			id.Namespace, pod.Name, sa, id.ServiceAccount)
	}
	id.Pod, id.PodUID = pod.Name, string(pod.UID)
	return id, nil
}

// StreamInterceptor authenticates every stream before its handler runs:
// a stream that proves nothing (no valid token, no client certificate of
// the mesh CA) ends with Unauthenticated and receives nothing.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		id, err := a.authenticateCall(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, &authedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), identityKey{}, id)})
	}
}

// UnaryInterceptor authenticates unary calls (CSDS is served to
// authenticated callers only).
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		id, err := a.authenticateCall(ctx)
		if err != nil {
			return nil, err
		}
		return handler(context.WithValue(ctx, identityKey{}, id), req)
	}
}

func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, wire.BearerPrefix); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }

// CheckNode refuses a node id that is not the identity's pod's.
func CheckNode(id Identity, nodeID string) error {
	if nodeID != id.NodeID() {
		return status.Errorf(codes.PermissionDenied, "the stream proved pod %s/%s, and may only use node id %q, not %q",
			id.Namespace, id.Pod, id.NodeID(), nodeID)
	}
	return nil
}
