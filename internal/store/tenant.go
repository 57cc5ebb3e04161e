package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

const upsertTenant = `
INSERT INTO tenants (id, name) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id`

const insertAPIKey = `INSERT INTO api_keys (id, tenant_id, hash, prefix) VALUES ($1, $2, $3, $4)`

// CreateAPIKey creates the tenant called name if it does not exist and a new
// API key for it. It returns the secret, which is not stored.
func (s *Store) CreateAPIKey(ctx context.Context, tenantName string) (string, error) {
	secret := domain.NewAPIKey()
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		now := s.now()
		var tenantID string
		if err := tx.QueryRow(ctx, upsertTenant, domain.NewID(domain.PrefixTenant, now), tenantName).Scan(&tenantID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, insertAPIKey, domain.NewID(domain.PrefixAPIKey, now), tenantID, domain.HashAPIKey(secret), secret[:len(domain.APIKeyPrefix)+6])
		return err
	})
	if err != nil {
		return "", public(err)
	}
	return secret, nil
}

const selectKeyTenant = `SELECT tenant_id FROM api_keys WHERE hash = $1 AND revoked_at IS NULL`

// authTTL bounds how long a valid key is remembered without asking the
// database; unknown keys are never remembered. A revoked key so stops
// working on every running server within authTTL (product.md §2: 2 s),
// through PgBouncer too, where no LISTEN could tell them: each server asks
// at most once a second per key in use.
const authTTL = time.Second

type authEntry struct {
	tenantID string
	expires  time.Time
}

// Authenticate returns the tenant of a secret API key, or a 401 error.
func (s *Store) Authenticate(ctx context.Context, secret string) (string, error) {
	hash := domain.HashAPIKey(secret)
	if e, ok := s.authCache.Load(string(hash)); ok && time.Now().Before(e.(authEntry).expires) {
		return e.(authEntry).tenantID, nil
	}
	var tenantID string
	err := s.pool.QueryRow(ctx, selectKeyTenant, hash).Scan(&tenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", &domain.Error{Kind: domain.KindUnauthorized, Code: domain.CodeUnauthorized, Detail: "the API key is not valid"}
	}
	if err != nil {
		return "", public(err)
	}
	s.authCache.Store(string(hash), authEntry{tenantID, time.Now().Add(authTTL)})
	return tenantID, nil
}

// APIKey is what may be shown of an API key: never its secret.
type APIKey struct {
	ID, Prefix string
	CreatedAt  time.Time
	RevokedAt  *time.Time
}

const listAPIKeys = `
SELECT k.id, k.prefix, k.created_at, k.revoked_at FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE t.name = $1 ORDER BY k.created_at, k.id`

// ErrNoSuchTenant and ErrNoSuchAPIKey are the admin commands' "not found".
var (
	ErrNoSuchTenant = errors.New("no such tenant")
	ErrNoSuchAPIKey = errors.New("no such API key")
)

// ListAPIKeys returns the keys of the tenant called name, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context, name string) ([]APIKey, error) {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE name = $1)`, name).Scan(&exists); err != nil {
		return nil, public(err)
	}
	if !exists {
		return nil, ErrNoSuchTenant
	}
	rows, _ := s.pool.Query(ctx, listAPIKeys, name)
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APIKey, error) {
		var k APIKey
		err := r.Scan(&k.ID, &k.Prefix, &k.CreatedAt, &k.RevokedAt)
		return k, err
	})
	return keys, public(err)
}

const revokeAPIKey = `
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING revoked_at`

// RevokeAPIKey revokes the key id (again: nothing changes) and returns when
// it was revoked. Every server stops accepting it within authTTL.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) (time.Time, error) {
	var at time.Time
	err := s.pool.QueryRow(ctx, revokeAPIKey, id).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, ErrNoSuchAPIKey
	}
	return at, public(err)
}
