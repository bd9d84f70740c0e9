package identity

import (
	"crypto"
	"errors"
	"time"
)

// Leaf is a workload certificate in memory with its key: what a sidecar is
// served over SDS. Its key is never written anywhere but into the SDS
// secret of a proxy that proved ID.
type Leaf struct {
	ID ID
	// Chain is the leaf and the intermediates above it, DER, leaf first.
	Chain [][]byte
	Key   crypto.Signer
	// Bundle is what peers are checked against, PEM, as it was when the
	// leaf was handed out.
	Bundle []byte
	// CA is the certificate of the CA that signed it (DER), when weft
	// signed it itself: a rotation replaces it.
	CA []byte
	// RenewAt is half-life; NotAfter the leaf's expiry.
	RenewAt, NotAfter time.Time
}

// ErrWaiting is wrapped by a source of leaves that has none for an
// identity yet and asked for one: the proxy waits, and is sent nothing
// that names a certificate it lacks.
var ErrWaiting = errors.New("waiting for a certificate")
