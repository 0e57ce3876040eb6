package events

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Headers of an object that say who wrote it: the writer's NATS user JWT, and its signature of
// the object's digest with that user's key.
const (
	HeaderWriter          = "Troupe-Writer"
	HeaderWriterSignature = "Troupe-Writer-Signature"
)

// ErrUntrustedWriter: an object was not written (signed) by an identity its reader trusts.
var ErrUntrustedWriter = errors.New("not written by a trusted identity")

// Signer signs the digests of the objects a service writes with the key of its NATS identity,
// so that a reader can tell who wrote them (Attestor) whatever NATS let others do.
type Signer struct {
	jwt string
	kp  nkeys.KeyPair
}

// SignerFromCreds reads the user JWT and key of a NATS credentials file.
func SignerFromCreds(path string) (*Signer, error) {
	b, token, _, err := readCreds(path)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	kp, err := jwt.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("signer: %s: %w", path, err)
	}
	return &Signer{jwt: token, kp: kp}, nil
}

func (s *Signer) headers(digest string) (nats.Header, error) {
	sig, err := s.kp.Sign([]byte(digest))
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	h.Set(HeaderWriter, s.jwt)
	h.Set(HeaderWriterSignature, base64.RawURLEncoding.EncodeToString(sig))
	return h, nil
}

// Attestor checks that an object was written by one of a set of identities of one account: the
// writer's user JWT is issued by that account, names one of them (and carries CredsTag), and
// signed the object's digest.
type Attestor struct {
	account string
	writers []string
}

// AttestorFromCreds trusts writers of the account that issued the user of the credentials file
// at path (the reader's own: one troupe system is one account).
func AttestorFromCreds(path string, writers ...string) (*Attestor, error) {
	_, _, uc, err := readCreds(path)
	if err != nil {
		return nil, fmt.Errorf("attestor: %w", err)
	}
	return &Attestor{account: uc.Issuer, writers: writers}, nil
}

// Check returns nil when h attests that digest was written by a trusted writer, else an error
// wrapping ErrUntrustedWriter that says why.
func (a *Attestor) Check(h nats.Header, digest string) error {
	token := h.Get(HeaderWriter)
	if token == "" {
		return fmt.Errorf("%w: it names no writer", ErrUntrustedWriter)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return fmt.Errorf("%w: its writer: %w", ErrUntrustedWriter, err)
	}
	// troupe's users are signed by the account's own key (Authority), never a signing key.
	if uc.Issuer != a.account || uc.IssuerAccount != "" {
		return fmt.Errorf("%w: written by %q of another account", ErrUntrustedWriter, uc.Name)
	}
	if !uc.Tags.Contains(CredsTag) || !slices.Contains(a.writers, uc.Name) {
		return fmt.Errorf("%w: written by %q, not %v", ErrUntrustedWriter, uc.Name, a.writers)
	}
	sig, err := base64.RawURLEncoding.DecodeString(h.Get(HeaderWriterSignature))
	if err != nil {
		return fmt.Errorf("%w: its signature: %w", ErrUntrustedWriter, err)
	}
	kp, err := nkeys.FromPublicKey(uc.Subject)
	if err != nil {
		return fmt.Errorf("%w: its writer's key: %w", ErrUntrustedWriter, err)
	}
	if err := kp.Verify([]byte(digest), sig); err != nil {
		return fmt.Errorf("%w: %q did not sign it", ErrUntrustedWriter, uc.Name)
	}
	return nil
}
