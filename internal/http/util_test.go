package http_test

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func pgxpoolNew(pc *pgxpool.Config) (*pgxpool.Pool, error) {
	return pgxpool.NewWithConfig(context.Background(), pc)
}
