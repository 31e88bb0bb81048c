package apitoken_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/quota"
)

func TestTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		l := quota.New(db, quota.Config{Now: func() time.Time { return now }})
		if _, err := l.Init(ctx, quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 10, StartsAt: now.AddDate(0, -1, 0), EndsAt: now.AddDate(1, 0, 0)},
			Accounts: []quota.AccountSpec{{Name: "sjti/talento", Allocation: 5}}}, "test"); err != nil {
			t.Fatal(err)
		}
		s := apitoken.NewStore(db, func() time.Time { return now })
		acct, secret, err := s.Add(ctx, "sjti/talento", "sistema", "test")
		if err != nil || acct.Admin() || !strings.HasPrefix(secret, "envios_") || len(secret) < 50 {
			t.Fatalf("%+v %q %v", acct, secret, err)
		}
		admin, adminSecret, err := s.Add(ctx, "", "ops", "test")
		if err != nil || !admin.Admin() {
			t.Fatalf("%+v %v", admin, err)
		}
		if got, err := s.Authenticate(ctx, secret); err != nil || got.ID != acct.ID || got.Account != "sjti/talento" || !got.CreatedAt.Equal(now) {
			t.Fatalf("authenticate: %+v %v", got, err)
		}
		if got, err := s.Authenticate(ctx, adminSecret); err != nil || !got.Admin() {
			t.Fatalf("admin: %+v %v", got, err)
		}
		for _, bad := range []string{"", "envios_", secret + "x", strings.ToUpper(secret), "Bearer " + secret} {
			if _, err := s.Authenticate(ctx, bad); !errors.Is(err, apitoken.ErrUnauthorized) {
				t.Errorf("%q: %v", bad, err)
			}
		}
		if _, _, err := s.Add(ctx, "sjti/nadie", "", "test"); !errors.Is(err, apitoken.ErrNotFound) {
			t.Errorf("unknown account: %v", err)
		}
		if ok, err := s.Revoke(ctx, acct.ID, "test"); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if ok, err := s.Revoke(ctx, acct.ID, "test"); ok || err != nil {
			t.Fatal("second revoke", ok, err)
		}
		if _, err := s.Authenticate(ctx, secret); !errors.Is(err, apitoken.ErrUnauthorized) {
			t.Fatalf("revoked token: %v", err)
		}
		list, err := s.List(ctx)
		if err != nil || len(list) != 2 || list[0].RevokedAt.IsZero() || !list[1].RevokedAt.IsZero() {
			t.Fatalf("list %+v %v", list, err)
		}
		var stored []string
		if err := db.NewRaw("SELECT hash FROM api_tokens").Scan(ctx, &stored); err != nil {
			t.Fatal(err)
		}
		for _, h := range stored {
			if strings.Contains(h, secret[7:20]) || len(h) != 64 {
				t.Fatalf("stored %q is not a SHA-256 of the token", h)
			}
		}
	})
}
