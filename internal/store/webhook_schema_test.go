package store_test

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/testdb"
)

// Delivery ids are made in SQL by the fan-out trigger; they must be ids
// like those Go makes: the same base32 alphabet over the same 16 bytes, so
// they validate, and they sort by creation time.
func TestSQLIDsMatchGoIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	enc := base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)
	for i := 0; i < 50; i++ {
		raw := make([]byte, 16)
		rand.Read(raw)
		var got string
		if err := pool.QueryRow(ctx, `SELECT safeflow_encode_id('del_', $1)`, raw).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := "del_" + enc.EncodeToString(raw); got != want {
			t.Fatalf("safeflow_encode_id(%x) = %s, want %s", raw, got, want)
		}
	}
	before := domain.NewID(domain.PrefixDelivery, time.Now().Add(-time.Millisecond))
	var id string
	if err := pool.QueryRow(ctx, `SELECT safeflow_new_id('del_')`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	after := domain.NewID(domain.PrefixDelivery, time.Now().Add(time.Millisecond))
	if !domain.ValidID(domain.PrefixDelivery, id) || id[:13] < before[:13] || id[:13] > after[:13] { // 9 characters: 45 bits of milliseconds
		t.Errorf("safeflow_new_id = %s; want a valid id between %s and %s by time", id, before, after)
	}
}
