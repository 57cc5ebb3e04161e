package store_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// savepoints counts the SAVEPOINT statements a pool sends.
type savepoints struct {
	roundTrips
	n atomic.Int64
}

func (c *savepoints) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if strings.HasPrefix(d.SQL, "SAVEPOINT ") {
		c.n.Add(1)
	}
}

// A batch of 1000 payments keeps to at most 64 subtransactions (one
// savepoint per chunk of 50), answers each item as before, and when the
// database refuses one item's write, only that item is refused: its chunk is
// done again item by item.
func TestBatchOf1000KeepsSubtransactionsFew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t)
	counter := &savepoints{}
	st := store.New(tracedPool(t, base, counter), store.Options{})
	tenant, accounts := tenantWithAccounts(t, st, 2)
	a, b := accounts[0], accounts[1]
	if _, err := st.Move(ctx, testdb.Request(tenant, "fund", "fund", movementID), domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 900}); err != nil {
		t.Fatal(err)
	}
	// The database refuses the payment of 7 (as the books' CHECK would):
	// the domain allowed it, so only the write can refuse it.
	if _, err := base.Exec(ctx, `
		CREATE FUNCTION refuse_seven() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			IF NEW.amount = 7 THEN
				RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_books_nonnegative';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_seven BEFORE INSERT ON payments FOR EACH ROW EXECUTE FUNCTION refuse_seven();`); err != nil {
		t.Fatal(err)
	}
	items := make([]domain.NewPayment, 1000)
	for i := range items {
		items[i] = domain.NewPayment{PayerAccountID: a.ID, PayeeAccountID: b.ID, Amount: 1, Currency: "USD"}
	}
	items[123].Amount = 7 // refused by the database
	var slruBefore, slruAfter int64
	slru := `SELECT coalesce(sum(blks_zeroed + blks_hit + blks_read), 0) FROM pg_stat_slru WHERE name = 'Subtrans'`
	_ = base.QueryRow(ctx, slru).Scan(&slruBefore)
	req := domain.Request[[]domain.BatchItem]{
		Idempotency: domain.Idempotency{TenantID: tenant, Key: "batch", Fingerprint: []byte("batch")},
		Render: func(out []domain.BatchItem) (domain.Response, error) {
			body, err := json.Marshal(out)
			return domain.Response{Status: http.StatusOK, ContentType: "application/json", Body: body}, err
		},
		Refuse: func(e *domain.Error) (domain.Response, error) {
			return domain.Response{Status: e.Kind.Status(), Body: []byte(e.Code)}, nil
		},
	}
	// A reader meanwhile: its snapshots see the batch's transaction in
	// progress; once that transaction has over 64 subtransactions, they
	// must look its rows' xids up in pg_subtrans.
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			_ = base.QueryRow(ctx, `SELECT count(*) FROM payments`).Scan(&n)
		}
	}()
	start := time.Now()
	res, err := st.CreatePayments(ctx, req, items)
	took := time.Since(start)
	close(stop)
	<-readerDone
	if err != nil {
		t.Fatal(err)
	}
	_ = base.QueryRow(ctx, slru).Scan(&slruAfter)
	var out []struct {
		Payment *domain.Payment
		Refusal *domain.Error
	}
	if err := json.Unmarshal(res.Body, &out); err != nil {
		t.Fatal(err)
	}
	created, refused := 0, map[int]string{}
	for i, o := range out {
		if o.Refusal != nil {
			refused[i] = o.Refusal.Code
		} else if o.Payment != nil {
			created++
		}
	}
	// 900 available: items 0..899 but 123 can be paid (the refused one
	// frees its 7 for the next ones), so 900 are created.
	if created != 900 || refused[123] != domain.CodeInsufficientFunds || len(refused) != 100 {
		t.Errorf("created %d, refused %d (item 123: %q); want 900 created and 100 refused, 123 by the database", created, len(refused), refused[123])
	}
	if n := counter.n.Load(); n > 64 {
		t.Errorf("%d savepoints for a 1000-item batch, want at most 64", n)
	}
	t.Logf("1000-item batch: %v, %d savepoints, pg_stat_slru Subtrans accesses +%d", took.Round(time.Millisecond), counter.n.Load(), slruAfter-slruBefore)
	if _, err := base.Exec(ctx, `DROP TRIGGER refuse_seven ON payments`); err != nil {
		t.Fatal(err)
	}
	testdb.CheckInvariants(t, base, testdb.KeysPurged) // the batch's answer is not the API's, so no stored creations to match
}
