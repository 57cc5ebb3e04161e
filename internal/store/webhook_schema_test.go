package store_test

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/outbox"
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

// The fan-out trigger spells in SQL the channel that Go code names in
// outbox, and takes no lock a writer could queue behind; the schema's
// CHECKs spell the statuses that domain names: each must say what the
// other says.
func TestSQLSpellsTheWebhookTermsAsGoDoes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	var trigger string
	if err := pool.QueryRow(ctx, `SELECT pg_get_functiondef('events_fan_out'::regproc)`).Scan(&trigger); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("pg_notify('%s', '')", outbox.Channel); !strings.Contains(trigger, want) {
		t.Errorf("events_fan_out does not call %s:\n%s", want, trigger)
	}
	if strings.Contains(trigger, "lock") {
		t.Errorf("events_fan_out takes a lock; every writer of the tenant would wait for it:\n%s", trigger)
	}
	for table, want := range map[string][]string{
		"webhook_deliveries": domain.DeliveryStatuses,
		"webhook_endpoints":  {domain.EndpointEnabled, domain.EndpointDisabled},
	} {
		var check string
		if err := pool.QueryRow(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint
			WHERE conrelid = $1::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%status = ANY%'`, table).Scan(&check); err != nil {
			t.Fatalf("%s: the CHECK on status: %v", table, err)
		}
		got := regexp.MustCompile(`'([a-z]+)'`).FindAllStringSubmatch(check, -1)
		var statuses []string
		for _, m := range got {
			statuses = append(statuses, m[1])
		}
		if diff := cmp.Diff(want, statuses); diff != "" {
			t.Errorf("%s: %s lists other statuses than domain (-domain +schema):\n%s", table, check, diff)
		}
	}
}
