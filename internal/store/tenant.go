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
// database; unknown keys are never remembered.
const authTTL = 30 * time.Second

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
