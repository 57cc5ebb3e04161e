package domain

import (
	"errors"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func accountWith(id string, b Balances) Account {
	return Account{ID: id, Object: "account", Currency: "USD", Balances: b, Version: 7}
}

// Every (status, action) pair: the allowed ones move exactly the books of
// product.md §4 by the amount and bump the versions; the others are
// invalid_transition naming the current status.
func TestTransitionTable(t *testing.T) {
	t.Parallel()
	type books struct{ payer, payee Balances }
	start := books{Balances{1000, 100, 0}, Balances{100, 0, 100}}
	want := map[string]map[string]books{ // from → action → books after, for x = 100
		StatusPending:   {ActionConfirm: {Balances{1000, 0, 0}, Balances{100, 0, 200}}, ActionCancel: {Balances{1100, 0, 0}, Balances{100, 0, 100}}},
		StatusConfirmed: {ActionSettle: {Balances{1000, 100, 0}, Balances{200, 0, 0}}, ActionRefund: {Balances{1100, 100, 0}, Balances{100, 0, 0}}},
		StatusSettled:   {ActionRefund: {Balances{1100, 100, 0}, Balances{0, 0, 100}}},
	}
	for _, from := range PaymentStatuses {
		for _, action := range []string{ActionConfirm, ActionSettle, ActionCancel, ActionRefund} {
			p := Payment{ID: "pay_1", Status: from, Amount: 100, Currency: "USD", PayerAccountID: "acct_a", PayeeAccountID: "acct_b", Version: 3}
			tr, err := p.Check(action, Precondition{})
			w, allowed := want[from][action]
			if !allowed {
				var de *Error
				if !errors.As(err, &de) || de.Code != CodeInvalidTransition || de.CurrentStatus != from || !de.Stored() {
					t.Errorf("%s from %s: err = %v, want a stored invalid_transition with current_status %s", action, from, err, from)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s from %s: %v", action, from, err)
			}
			c, err := p.Apply(tr, accountWith("acct_a", start.payer), accountWith("acct_b", start.payee), now)
			if err != nil {
				t.Fatalf("%s from %s: %v", action, from, err)
			}
			got := books{start.payer, start.payee}
			for _, a := range c.Accounts {
				if a.Version != 8 {
					t.Errorf("%s from %s: account %s version %d, want 8", action, from, a.ID, a.Version)
				}
				if a.ID == "acct_a" {
					got.payer = a.Balances
				} else {
					got.payee = a.Balances
				}
			}
			if got != w {
				t.Errorf("%s from %s: books %+v, want %+v", action, from, got, w)
			}
			var sum int64
			for _, l := range c.Lines {
				sum += l.Amount
				if l.JournalID != c.JournalID {
					t.Errorf("%s from %s: line in journal %s, want %s", action, from, l.JournalID, c.JournalID)
				}
			}
			if len(c.Lines) != 2 || sum != 0 {
				t.Errorf("%s from %s: %d lines summing to %d, want 2 summing to 0", action, from, len(c.Lines), sum)
			}
			if c.Payment.Status != tr.To || c.Payment.Version != 4 || !c.Payment.UpdatedAt.Equal(now) {
				t.Errorf("%s from %s: payment %s v%d", action, from, c.Payment.Status, c.Payment.Version)
			}
		}
	}
}

func TestCreateRefusals(t *testing.T) {
	t.Parallel()
	payer, payee := accountWith("acct_a", Balances{Available: 50}), accountWith("acct_b", Balances{})
	eur := payee
	eur.Currency = "EUR"
	tests := []struct {
		name         string
		in           NewPayment
		payer, payee Account
		code         string
	}{
		{"same account", NewPayment{PayerAccountID: "acct_a", PayeeAccountID: "acct_a", Amount: 1, Currency: "USD"}, payer, payer, CodeSameAccount},
		{"payee currency", NewPayment{PayerAccountID: "acct_a", PayeeAccountID: "acct_b", Amount: 1, Currency: "USD"}, payer, eur, CodeCurrencyMismatch},
		{"payment currency", NewPayment{PayerAccountID: "acct_a", PayeeAccountID: "acct_b", Amount: 1, Currency: "EUR"}, payer, payee, CodeCurrencyMismatch},
		{"too much", NewPayment{PayerAccountID: "acct_a", PayeeAccountID: "acct_b", Amount: 51, Currency: "USD"}, payer, payee, CodeInsufficientFunds},
	}
	for _, tc := range tests {
		_, err := tc.in.Create("ten_1", map[string]Account{tc.payer.ID: tc.payer, tc.payee.ID: tc.payee}, now)
		var de *Error
		if !errors.As(err, &de) || de.Code != tc.code || de.Kind != KindUnprocessable {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
		}
	}
	c, err := NewPayment{PayerAccountID: "acct_a", PayeeAccountID: "acct_b", Amount: 50, Currency: "USD"}.Create("ten_1", map[string]Account{"acct_a": payer, "acct_b": payee}, now)
	if err != nil {
		t.Fatal(err)
	}
	if c.Payment.Status != StatusPending || c.Payment.Version != 1 || len(c.Accounts) != 1 || c.Accounts[0].Balances != (Balances{0, 50, 0}) {
		t.Errorf("created %+v, accounts %+v", c.Payment, c.Accounts)
	}
}

func TestPrecondition(t *testing.T) {
	t.Parallel()
	p := Payment{ID: "pay_1", Status: StatusPending, Version: 2}
	for _, tc := range []struct {
		c  Precondition
		ok bool
	}{
		{Precondition{}, true},
		{Precondition{Any: true}, true},
		{Precondition{Versions: []int64{1, 2}}, true},
		{Precondition{Versions: []int64{1}}, false},
		{Precondition{Versions: []int64{}}, false}, // only tags that are not ours, e.g. weak ones
	} {
		_, err := p.Check(ActionConfirm, tc.c)
		var de *Error
		failed := errors.As(err, &de) && de.Code == CodePreconditionFailed && de.Kind == KindPrecondition && !de.Stored()
		if failed == tc.ok {
			t.Errorf("%+v: err = %v, want ok = %v", tc.c, err, tc.ok)
		}
	}
}

// ActionParties, which a transition's locks follow before the payment's
// status is read, covers the parties of every row of the table with that
// action.
func TestActionPartiesCoverEveryTransition(t *testing.T) {
	for _, tr := range Transitions {
		payer, payee := ActionParties(tr.Action)
		for _, p := range tr.Parties() {
			if p == Payer && !payer || p == Payee && !payee {
				t.Errorf("%s from %q moves party %d, which ActionParties(%q) = (%v, %v) leaves unlocked", tr.Action, tr.From, p, tr.Action, payer, payee)
			}
		}
	}
	if payer, payee := ActionParties("nonsense"); payer || payee {
		t.Errorf("ActionParties of an unknown action = (%v, %v), want none", payer, payee)
	}
}
