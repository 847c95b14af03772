package githook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

var (
	errNoSignature  = errors.New("missing X-Hub-Signature-256 header")
	errBadSignature = errors.New("X-Hub-Signature-256 is not sha256=<64 hex digits>")
	errMismatch     = errors.New("signature does not match")
)

// verify checks header against the HMAC SHA-256 of body under each secret
// and returns the index of the one that matched. The comparison is
// constant-time; SHA-1 (X-Hub-Signature) is never accepted.
func verify(secrets [][]byte, body []byte, header string) (int, error) {
	if header == "" {
		return -1, errNoSignature
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexSig) != 2*sha256.Size {
		return -1, errBadSignature
	}
	want, err := hex.DecodeString(hexSig)
	if err != nil {
		return -1, errBadSignature
	}
	for i, secret := range secrets {
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if hmac.Equal(mac.Sum(nil), want) {
			return i, nil
		}
	}
	return -1, errMismatch
}
