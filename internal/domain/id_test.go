package domain

import (
	"testing"
	"time"
)

func TestIDsSortByCreationTime(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	prev := NewID(PrefixAccount, t0)
	for i := 1; i < 1000; i++ {
		id := NewID(PrefixAccount, t0.Add(time.Duration(i)*time.Millisecond))
		if id <= prev {
			t.Fatalf("%s (t+%dms) sorts before %s", id, i, prev)
		}
		if !ValidID(PrefixAccount, id) || ValidID(PrefixDeposit, id) {
			t.Fatalf("ValidID misjudges %s", id)
		}
		prev = id
	}
	if a, b := NewID(PrefixAccount, t0), NewID(PrefixAccount, t0); a == b {
		t.Errorf("two ids in one millisecond are equal: %s", a)
	}
	for _, bad := range []string{"", "acct_", "acct_short", "dep_06gzyps0ftna458mtcpsnncvj0", "acct_06gzyps0ftna458mtcpsnncvjU"} {
		if ValidID(PrefixAccount, bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestMove(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	a := Account{ID: "acct_x", Currency: "EUR", Balances: Balances{Available: 100, Held: 7}, Version: 4}
	p, err := a.Move(NewMovement{Kind: KindWithdrawal, AccountID: a.ID, Amount: 60}, "acct_sys", now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Account.Balances != (Balances{Available: 40, Held: 7}) || p.Account.Version != 5 {
		t.Errorf("after withdrawal: %+v", p.Account)
	}
	var sum int64
	for _, l := range p.Lines {
		sum += l.Amount
		if l.JournalID != p.Movement.JournalID || l.Currency != "EUR" || l.Book != BookAvailable {
			t.Errorf("line %+v", l)
		}
	}
	if sum != 0 || len(p.Lines) != 2 || p.Lines[0].AccountID != "acct_x" || p.Lines[0].Amount != -60 {
		t.Errorf("lines %+v do not form a balanced journal debiting acct_x", p.Lines)
	}
	_, err = a.Move(NewMovement{Kind: KindWithdrawal, AccountID: a.ID, Amount: 101}, "acct_sys", now)
	if e, ok := err.(*Error); !ok || e.Code != CodeInsufficientFunds || !e.Stored() {
		t.Errorf("overdraft: %v, want a stored insufficient_funds", err)
	}
}
