package domain

import (
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Payment statuses.
const (
	StatusPending   = "pending"
	StatusConfirmed = "confirmed"
	StatusSettled   = "settled"
	StatusCancelled = "cancelled"
	StatusRefunded  = "refunded"
)

// PaymentStatuses lists every status a payment can have.
var PaymentStatuses = []string{StatusPending, StatusConfirmed, StatusSettled, StatusCancelled, StatusRefunded}

// Actions on a payment. Create has no "from" status.
const (
	ActionCreate  = "create"
	ActionConfirm = "confirm"
	ActionSettle  = "settle"
	ActionCancel  = "cancel"
	ActionRefund  = "refund"
)

// Party names a side of a payment.
type Party int

// The parties of a payment.
const (
	Payer Party = iota
	Payee
)

// Leg is one ledger line of a transition: the party's book moves by
// Sign × amount.
type Leg struct {
	Party Party
	Book  string
	Sign  int64
}

// Transition is one row of the payment state machine: from a status, an
// action leads to another status, moves the books of its legs and writes
// one event.
type Transition struct {
	From, Action, To string
	Event            string
	Legs             [2]Leg // the debit, then the credit
}

// Transitions is the payment state machine (product.md §4), the one place
// where the allowed transitions are written down. The database refuses any
// other status change too (migrations/00002_payments.sql); a test checks
// that both agree.
var Transitions = []Transition{
	{"", ActionCreate, StatusPending, "payment.created", [2]Leg{{Payer, BookAvailable, -1}, {Payer, BookHeld, +1}}},
	{StatusPending, ActionConfirm, StatusConfirmed, "payment.confirmed", [2]Leg{{Payer, BookHeld, -1}, {Payee, BookIncoming, +1}}},
	{StatusConfirmed, ActionSettle, StatusSettled, "payment.settled", [2]Leg{{Payee, BookIncoming, -1}, {Payee, BookAvailable, +1}}},
	{StatusPending, ActionCancel, StatusCancelled, "payment.cancelled", [2]Leg{{Payer, BookHeld, -1}, {Payer, BookAvailable, +1}}},
	{StatusConfirmed, ActionRefund, StatusRefunded, "payment.refunded", [2]Leg{{Payee, BookIncoming, -1}, {Payer, BookAvailable, +1}}},
	{StatusSettled, ActionRefund, StatusRefunded, "payment.refunded", [2]Leg{{Payee, BookAvailable, -1}, {Payer, BookAvailable, +1}}},
}

// FindTransition returns the transition that action takes from status.
func FindTransition(from, action string) (Transition, bool) {
	for _, t := range Transitions {
		if t.From == from && t.Action == action {
			return t, true
		}
	}
	return Transition{}, false
}

// Parties returns the parties whose books the transition moves, payer first.
func (t Transition) Parties() []Party {
	var ps []Party
	for _, p := range []Party{Payer, Payee} {
		if t.Legs[0].Party == p || t.Legs[1].Party == p {
			ps = append(ps, p)
		}
	}
	return ps
}

// ActionParties returns whether action moves the payer's books and the
// payee's, from any status it is allowed from: what a transition locks
// before it reads the payment's status.
func ActionParties(action string) (payer, payee bool) {
	for _, t := range Transitions {
		if t.Action == action {
			for _, l := range t.Legs {
				payer, payee = payer || l.Party == Payer, payee || l.Party == Payee
			}
		}
	}
	return payer, payee
}

// Payment moves money from a payer to a payee account through the state
// machine above; its JSON form is the API's payment shape.
type Payment struct {
	ID             string            `json:"id"`
	Object         string            `json:"object"` // always "payment"
	Status         string            `json:"status"`
	Amount         int64             `json:"amount"`
	Currency       string            `json:"currency"`
	PayerAccountID string            `json:"payer_account_id"`
	PayeeAccountID string            `json:"payee_account_id"`
	Description    *string           `json:"description"`
	Metadata       map[string]string `json:"metadata"`
	Version        int64             `json:"version"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
	TenantID       string            `json:"-"`
}

// Account returns the id of the account of party p.
func (p Payment) Account(party Party) string {
	if party == Payee {
		return p.PayeeAccountID
	}
	return p.PayerAccountID
}

// NewPayment is a validated request to create a payment.
type NewPayment struct {
	PayerAccountID string
	PayeeAccountID string
	Amount         int64
	Currency       string
	Description    *string
	Metadata       map[string]string
}

// PaymentChange is the plan of one transition: the payment after it, its
// journal lines, the accounts whose books moved (after the change) and the
// event to publish. It is computed from locked rows and nothing else, so the
// store only has to write it.
type PaymentChange struct {
	Payment    Payment
	Transition Transition
	JournalID  string
	Lines      []LedgerEntry
	Accounts   []Account
}

// Create decides the creation of n on the tenant's accounts locked for it
// (keyed by id; an account that is not there is not the tenant's): payer
// and payee must differ, exist and share the payment's currency, and the
// payer must have the amount available, which is then held. The checks run
// in that order, so a payment to itself is same_account even if the
// account does not exist.
func (n NewPayment) Create(tenantID string, locked map[string]Account, now time.Time) (PaymentChange, error) {
	if n.PayerAccountID == n.PayeeAccountID {
		return PaymentChange{}, &Error{Kind: KindUnprocessable, Code: CodeSameAccount,
			Detail: fmt.Sprintf("payer and payee are the same account %s", n.PayerAccountID)}
	}
	payer, ok := locked[n.PayerAccountID]
	if !ok {
		return PaymentChange{}, NotFound("payer account", n.PayerAccountID)
	}
	payee, ok := locked[n.PayeeAccountID]
	if !ok {
		return PaymentChange{}, NotFound("payee account", n.PayeeAccountID)
	}
	if payer.Currency != n.Currency || payee.Currency != n.Currency {
		return PaymentChange{}, &Error{Kind: KindUnprocessable, Code: CodeCurrencyMismatch,
			Detail: fmt.Sprintf("the payment is in %s; the payer account is in %s and the payee account in %s",
				n.Currency, payer.Currency, payee.Currency)}
	}
	md := n.Metadata
	if md == nil {
		md = map[string]string{}
	}
	p := Payment{
		ID: NewID(PrefixPayment, now), Object: "payment", Amount: n.Amount, Currency: n.Currency,
		PayerAccountID: payer.ID, PayeeAccountID: payee.ID, Description: n.Description, Metadata: md,
		CreatedAt: now, TenantID: tenantID,
	}
	t, _ := FindTransition("", ActionCreate)
	return p.Apply(t, payer, payee, now)
}

// Precondition is a parsed If-Match header. The zero value is "no header".
type Precondition struct {
	Any      bool    // If-Match: *
	Versions []int64 // the versions of the strong entity tags listed
}

// allows reports whether a resource at version satisfies the precondition.
func (c Precondition) allows(version int64) bool {
	return c.Any || c.Versions == nil || slices.Contains(c.Versions, version)
}

// Check decides whether action may run on the locked payment p under the
// precondition: a stale If-Match is refused first (412, not stored, since a
// retry with a fresh version may succeed), then an action the state machine
// does not allow from p's status (409 invalid_transition, stored).
func (p Payment) Check(action string, c Precondition) (Transition, error) {
	if !c.allows(p.Version) {
		return Transition{}, &Error{Kind: KindPrecondition, Code: CodePreconditionFailed,
			Detail: fmt.Sprintf("payment %s is at version %d (ETag %q), not the one If-Match names; fetch it and decide again",
				p.ID, p.Version, strconv.FormatInt(p.Version, 10))}
	}
	t, ok := FindTransition(p.Status, action)
	if !ok {
		return Transition{}, &Error{Kind: KindConflict, Code: CodeInvalidTransition, CurrentStatus: p.Status,
			Detail: fmt.Sprintf("cannot %s a payment that is %s", action, p.Status)}
	}
	return t, nil
}

// Apply decides transition t on the locked payment p and the locked
// accounts of the parties t moves (an account t does not move may be the
// zero Account): each leg moves its book by the amount, and no book may go
// below zero or above the largest supported balance.
func (p Payment) Apply(t Transition, payer, payee Account, now time.Time) (PaymentChange, error) {
	accounts := map[Party]*Account{Payer: &payer, Payee: &payee}
	journal := NewID(PrefixJournal, now)
	lines := make([]LedgerEntry, 0, len(t.Legs))
	for _, leg := range t.Legs {
		a := accounts[leg.Party]
		if a.ID != p.Account(leg.Party) {
			return PaymentChange{}, fmt.Errorf("domain: %s of payment %s needs account %s, got %q", t.Action, p.ID, p.Account(leg.Party), a.ID)
		}
		book := a.Balances.book(leg.Book)
		delta := leg.Sign * p.Amount
		switch {
		case *book+delta < 0:
			return PaymentChange{}, &Error{Kind: KindUnprocessable, Code: CodeInsufficientFunds,
				Detail: fmt.Sprintf("account %s has %d %s, %d needed", a.ID, *book, leg.Book, p.Amount)}
		case *book > MaxAmount*1000-delta:
			return PaymentChange{}, &Error{Kind: KindUnprocessable, Code: CodeAmountOutOfRange,
				Detail: fmt.Sprintf("the %s balance of account %s would exceed the largest supported amount", leg.Book, a.ID)}
		}
		*book += delta
		lines = append(lines, LedgerEntry{ID: NewID(PrefixEntry, now), Object: "ledger_entry", JournalID: journal,
			AccountID: a.ID, Book: leg.Book, Amount: delta, Currency: p.Currency, CreatedAt: now})
	}
	var changed []Account
	for _, party := range t.Parties() {
		a := accounts[party]
		a.Version++
		changed = append(changed, *a)
	}
	p.Status = t.To
	p.Version++ // a new payment starts at 0, so it is created at version 1
	p.UpdatedAt = now
	return PaymentChange{Payment: p, Transition: t, JournalID: journal, Lines: lines, Accounts: changed}, nil
}

func (b *Balances) book(name string) *int64 {
	switch name {
	case BookHeld:
		return &b.Held
	case BookIncoming:
		return &b.Incoming
	}
	return &b.Available
}

// PaymentFilter narrows a list of payments; empty fields match everything.
type PaymentFilter struct {
	Status    string
	AccountID string // payer or payee
}

// BatchItem is the outcome of one creation of a batch: a payment, or the
// refusal (Stored() is true) that rolled it back.
type BatchItem struct {
	Payment Payment
	Refusal *Error
}
