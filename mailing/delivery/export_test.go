package delivery

import (
	"context"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/mailing/smtpout"
)

// Claim is one claim, for tests of engines that die after claiming.
func (e *Engine) Claim(ctx context.Context) ([]mailstore.Claimed, error) { return e.claim(ctx) }

// RecordLate records an attempted outcome for it, as an engine that woke
// up after its lease expired would.
func (e *Engine) RecordLate(ctx context.Context, it mailstore.Claimed, res smtpout.Result) {
	e.recordBatch(ctx, []outcome{{it: it, res: res, attempted: true}})
}
