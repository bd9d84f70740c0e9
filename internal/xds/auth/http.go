package auth

import (
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/wire"
)

// AuthenticateRequest proves an HTTP request as a stream is proved: by its
// bearer token (the pod) or, without one, by the mesh client certificate
// of its TLS connection (a ServiceAccount). Errors carry a gRPC code
// (HTTPStatus turns it into an HTTP one).
func (a *Authenticator) AuthenticateRequest(r *http.Request) (Identity, error) {
	tok := ""
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), wire.BearerPrefix); ok {
		tok = strings.TrimSpace(t)
	}
	if tok == "" && a.Roots != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return a.certificate(r.TLS.PeerCertificates)
	}
	if tok == "" {
		return Identity{}, status.Error(codes.Unauthenticated, "the request carries no bearer token and no client certificate")
	}
	return a.Authenticate(r.Context(), tok)
}

// HTTPStatus is the HTTP status of an authentication error.
func HTTPStatus(err error) int {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
