package relay

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/outbox"
)

// listen turns notifications on outbox.Channel into wake-ups, on a
// connection of its own. It reconnects after an error; the poll covers the
// gap, and a wake-up after each (re)connection covers what was sent
// meanwhile.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for ctx.Err() == nil {
		err := func() error {
			cc := r.cfg.Listen
			if cc == nil {
				cc = r.pool.Config().ConnConfig
			}
			conn, err := pgx.ConnectConfig(ctx, cc.Copy())
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{outbox.Channel}.Sanitize()); err != nil {
				return err
			}
			signal()
			for {
				if _, err := conn.WaitForNotification(ctx); err != nil {
					return err
				}
				signal()
			}
		}()
		if ctx.Err() != nil {
			return
		}
		r.log.Warn().Err(err).Msg("LISTEN connection lost; polling until it is back")
		r.cfg.Metrics.errored("listen")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
