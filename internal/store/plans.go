package store

import "time"

// HotQuery is a statement on the request path or of a background job
// whose plan matters on a large tenant, with example arguments and the
// index it is meant to use. The plan test (plans_test.go) explains each on
// a seeded tenant.
type HotQuery struct {
	Name, SQL string
	Args      []any
	Index     string // the index the plan must use ("a|b": either)
}

// HotQueries are the store's, with arguments for the tenant "ten_big" of
// the plan test: account and payment ids of its seed. With one tenant in
// the database, an index on (tenant_id, id) and the primary key on id serve
// a tenant's page equally well; either is accepted there.
func HotQueries() []HotQuery {
	const acct, payee, pay = "acct_big_0001000", "acct_big_0001001", "pay_big_0001000"
	return []HotQuery{
		{"claim an idempotency key", claimKey, []any{"ten_big", "k", []byte("f"), "2030-01-01", "POST", "/v1/x"}, "idempotency_keys_pkey"},
		{"read a key's stored answer", selectKey, []any{"ten_big", "k", "2030-01-01"}, "idempotency_keys_pkey"},
		{"lock an account", lockAccounts, []any{"ten_big", "k", []string{acct}}, "accounts_pkey|accounts_tenant_list"},
		{"share-lock a payee", shareAccounts, []any{"ten_big", "k", []string{payee}}, "accounts_pkey|accounts_tenant_list"},
		{"lock a payment", lockPayment, []any{"ten_big", "k", pay}, "payments_pkey|payments_tenant_list"},
		{"lock a payment's accounts", lockParties, []any{"ten_big", "k", pay, true, true}, "accounts_pkey|accounts_tenant_list"},
		{"entries page", listEntries, []any{"ten_big", acct, "", 21}, "ledger_entries_account"},
		{"payments by status", listPayments, []any{"ten_big", "pending", "", "", 21}, "payments_tenant_list|payments_pkey"},
		{"payments of an account", listPayments, []any{"ten_big", "", acct, "", 21}, "payments_payer"},
		{"accounts page", listAccounts, []any{"ten_big", "", 21}, "accounts_tenant_list|accounts_pkey"},
		{"feed page", listEvents, []any{"ten_big", "evt_d_0001000_1", 21}, "events_tenant_feed_order"},
		{"dead deliveries", listOpenDeliveries, []any{"ten_big", "", "dead", "", 21}, "webhook_deliveries_open"},
		{"an endpoint's deliveries", listEndpointDeliveries, []any{"ten_big", "", "", "we_big", 21}, "webhook_deliveries_endpoint|webhook_deliveries_pkey"},
		{"purge expired keys", purgeExpiredKeys, []any{time.Now(), 500}, "idempotency_keys_expiry"},
	}
}
