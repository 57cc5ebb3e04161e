package domain

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"time"
)

// ID prefixes, one per resource type.
const (
	PrefixAccount    = "acct_"
	PrefixDeposit    = "dep_"
	PrefixWithdrawal = "wdr_"
	PrefixEntry      = "le_"
	PrefixJournal    = "jnl_"
	PrefixEvent      = "evt_"
	PrefixTenant     = "ten_"
	PrefixAPIKey     = "key_"
	PrefixPayment    = "pay_"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewID returns prefix followed by 26 characters: 48 bits of milliseconds and
// 80 random bits, so ids sort by creation time (to the millisecond) and keyset
// pagination by id lists newest first.
func NewID(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		panic("domain: crypto/rand failed: " + err.Error())
	}
	return prefix + idEncoding.EncodeToString(b[:])
}

// ValidID reports whether s looks like an id with the given prefix.
func ValidID(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || len(rest) != 26 {
		return false
	}
	_, err := idEncoding.DecodeString(rest)
	return err == nil
}
