package domain

import (
	"fmt"
	"time"
)

// Books of an account.
const (
	BookAvailable = "available"
	BookHeld      = "held"
	BookIncoming  = "incoming"
)

// MaxAmount bounds a single amount (minor units) so that sums stay far from
// the int64 limit.
const MaxAmount int64 = 1_000_000_000_000_000

// Balances are the three books of a customer account, in minor units.
type Balances struct {
	Available int64 `json:"available"`
	Held      int64 `json:"held"`
	Incoming  int64 `json:"incoming"`
}

// Account is a customer account; its JSON form is the API's account shape.
type Account struct {
	ID        string            `json:"id"`
	Object    string            `json:"object"` // always "account"
	Currency  string            `json:"currency"`
	Name      *string           `json:"name"`
	Metadata  map[string]string `json:"metadata"`
	Balances  Balances          `json:"balances"`
	Version   int64             `json:"version"`
	CreatedAt time.Time         `json:"created_at"`
	TenantID  string            `json:"-"`
}

// NewAccount is a validated request to open an account.
type NewAccount struct {
	Currency string
	Name     *string
	Metadata map[string]string
}

// Open builds the account that NewAccount describes.
func (n NewAccount) Open(tenantID string, now time.Time) Account {
	md := n.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return Account{
		ID: NewID(PrefixAccount, now), Object: "account", TenantID: tenantID,
		Currency: n.Currency, Name: n.Name, Metadata: md, Version: 1, CreatedAt: now,
	}
}

// Movement kinds: money in from, or out to, the tenant's system account.
const (
	KindDeposit    = "deposit"
	KindWithdrawal = "withdrawal"
)

// MovementPrefix returns the id prefix of a movement kind.
func MovementPrefix(kind string) string {
	if kind == KindWithdrawal {
		return PrefixWithdrawal
	}
	return PrefixDeposit
}

// Movement is a deposit or a withdrawal; its JSON form is the API's shape.
type Movement struct {
	ID        string    `json:"id"`
	Object    string    `json:"object"` // "deposit" or "withdrawal"
	AccountID string    `json:"account_id"`
	Amount    int64     `json:"amount"`
	Currency  string    `json:"currency"`
	Reference *string   `json:"reference"`
	JournalID string    `json:"journal_id"`
	CreatedAt time.Time `json:"created_at"`
}

// NewMovement is a validated request to deposit into or withdraw from an account.
type NewMovement struct {
	Kind      string // KindDeposit or KindWithdrawal
	AccountID string
	Amount    int64
	Reference *string
}

// LedgerEntry is one line of a journal; amounts are signed.
type LedgerEntry struct {
	ID        string    `json:"id"`
	Object    string    `json:"object"` // always "ledger_entry"
	JournalID string    `json:"journal_id"`
	AccountID string    `json:"account_id"`
	Book      string    `json:"book"`
	Amount    int64     `json:"amount"`
	Currency  string    `json:"currency"`
	CreatedAt time.Time `json:"created_at"`
}

// Posting is the plan of one movement: the row, its journal lines and the
// account after the change. It is computed from the locked account and
// nothing else, so the store only has to write it.
type Posting struct {
	Movement Movement
	Lines    []LedgerEntry
	Account  Account
}

// Move decides a deposit or withdrawal on the locked account a, against the
// tenant's system account systemID. A withdrawal beyond the available book is
// refused with insufficient_funds.
func (a Account) Move(n NewMovement, systemID string, now time.Time) (Posting, error) {
	delta := n.Amount
	if n.Kind == KindWithdrawal {
		if a.Balances.Available < n.Amount {
			return Posting{}, &Error{Kind: KindUnprocessable, Code: CodeInsufficientFunds,
				Detail: fmt.Sprintf("account %s has %d available, %d requested", a.ID, a.Balances.Available, n.Amount)}
		}
		delta = -n.Amount
	}
	if a.Balances.Available > MaxAmount*1000-delta {
		return Posting{}, &Error{Kind: KindUnprocessable, Code: CodeAmountOutOfRange,
			Detail: "the balance would exceed the largest supported amount"}
	}
	journal := NewID(PrefixJournal, now)
	mv := Movement{
		ID:     NewID(MovementPrefix(n.Kind), now),
		Object: n.Kind, AccountID: a.ID, Amount: n.Amount, Currency: a.Currency,
		Reference: n.Reference, JournalID: journal, CreatedAt: now,
	}
	line := func(account string, amount int64) LedgerEntry {
		return LedgerEntry{ID: NewID(PrefixEntry, now), Object: "ledger_entry", JournalID: journal,
			AccountID: account, Book: BookAvailable, Amount: amount, Currency: a.Currency, CreatedAt: now}
	}
	after := a
	after.Balances.Available += delta
	after.Version++
	return Posting{Movement: mv, Lines: []LedgerEntry{line(a.ID, delta), line(systemID, -delta)}, Account: after}, nil
}
