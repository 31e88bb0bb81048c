package report

import (
	"context"
	"fmt"
	"time"
)

// Suppression is one entry of the suppression list for an address.
type Suppression struct {
	ID        int64     `json:"id"`
	Scope     string    `json:"scope"` // all, bulk, account
	Account   string    `json:"account,omitempty"`
	Topic     string    `json:"topic,omitempty"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RemovedAt time.Time `json:"removed_at,omitzero"`
	Actor     string    `json:"actor"`
	Evidence  string    `json:"evidence,omitempty"`
}

// Suppressions returns every suppression-list entry of address, removed
// and expired ones too, oldest first.
func (r *Reporter) Suppressions(ctx context.Context, address string) ([]Suppression, error) {
	var rows []struct {
		ID        int64
		Scope     string
		Account   *string
		Topic     string
		Reason    string
		CreatedAt time.Time
		ExpiresAt *time.Time
		RemovedAt *time.Time
		Actor     string
		Evidence  string
	}
	if err := r.db.NewSelect().TableExpr("mail_suppressions AS s").
		ColumnExpr("s.id, s.scope, a.name AS account, s.topic, s.reason, s.created_at, s.expires_at, s.removed_at, s.actor, s.evidence").
		Join("LEFT JOIN quota_accounts AS a ON a.id = s.account_id").
		Where("s.address = ?", NormalizeAddress(address)).OrderExpr("s.id").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: suppressions: %w", err)
	}
	out := make([]Suppression, len(rows))
	for i, x := range rows {
		s := Suppression{ID: x.ID, Scope: x.Scope, Topic: x.Topic, Reason: x.Reason, CreatedAt: x.CreatedAt.In(r.loc), Actor: x.Actor}
		if x.Account != nil {
			s.Account = *x.Account
		}
		if x.ExpiresAt != nil {
			s.ExpiresAt = x.ExpiresAt.In(r.loc)
		}
		if x.RemovedAt != nil {
			s.RemovedAt = x.RemovedAt.In(r.loc)
		}
		if x.Evidence != "{}" {
			s.Evidence = x.Evidence
		}
		out[i] = s
	}
	return out, nil
}

// SuppressionCount is how many entries of one reason and scope stop mail now.
type SuppressionCount struct {
	Reason, Scope string
	N             int64
}

// ActiveSuppressions counts the suppression-list entries that stop mail
// at now, by reason and scope (for metrics).
func (r *Reporter) ActiveSuppressions(ctx context.Context, now time.Time) ([]SuppressionCount, error) {
	var out []SuppressionCount
	err := r.db.NewSelect().TableExpr("mail_suppressions").ColumnExpr("reason, scope, count(*) AS n").
		Where("removed_at IS NULL AND (expires_at IS NULL OR expires_at > ?)", now.UTC()).
		GroupExpr("reason, scope").OrderExpr("reason, scope").Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("report: active suppressions: %w", err)
	}
	return out, nil
}
