package domain

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// APIKeyPrefix starts every secret API key, so a leaked one is recognisable.
const APIKeyPrefix = "sk_"

// NewAPIKey returns a new secret API key: 32 random bytes, base64url.
func NewAPIKey() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("domain: crypto/rand failed: " + err.Error())
	}
	return APIKeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashAPIKey is the only form of a secret that is stored. The secret has 256
// bits of entropy, so a fast hash is enough; a slow one would only cost
// every request time.
func HashAPIKey(secret string) []byte {
	h := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	return h[:]
}
