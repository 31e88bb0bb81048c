package credential_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/credential"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/quota"
)

func TestHashVerify(t *testing.T) {
	h, err := credential.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q is not PHC argon2id", h)
	}
	h2, _ := credential.Hash("correct horse")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, tt := range []struct {
		hash, password string
		ok             bool
		err            error
	}{
		{h, "correct horse", true, nil},
		{h, "correct horsE", false, nil},
		{h, "", false, nil},
		{"", "x", false, credential.ErrHashFormat},
		{"$2a$10$abcdefghijklmnopqrstuv", "x", false, credential.ErrHashFormat},
		{strings.Replace(h, "m=19456", "m=99999999", 1), "x", false, credential.ErrHashFormat}, // would exhaust memory
		{strings.Replace(h, "t=2", "t=1000", 1), "x", false, credential.ErrHashFormat},
		{strings.Replace(h, "$v=19$", "$v=16$", 1), "x", false, credential.ErrHashFormat},
		{h[:len(h)-10], "correct horse", false, credential.ErrHashFormat},
	} {
		ok, err := credential.Verify(tt.hash, tt.password)
		if ok != tt.ok || !errors.Is(err, tt.err) {
			t.Errorf("Verify(%.40q, %q) = %v, %v; want %v, %v", tt.hash, tt.password, ok, err, tt.ok, tt.err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	h, _ := credential.Hash("x")
	f.Add(h, "x")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "")
	f.Add("$argon2id$v=19$m=,t=1,p=1$$", "")
	f.Fuzz(func(t *testing.T, hash, password string) {
		ok, err := credential.Verify(hash, password)
		if ok && err != nil {
			t.Fatal("ok with an error")
		}
	})
}

func TestStore(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		l := quota.New(db, quota.Config{Now: func() time.Time { return now }})
		plan := quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 100, StartsAt: now.AddDate(0, -1, 0), EndsAt: now.AddDate(1, 0, 0)},
			Accounts: []quota.AccountSpec{{Name: "sjti/talento", Allocation: 40}}}
		if _, err := l.Init(ctx, plan, "test"); err != nil {
			t.Fatal(err)
		}
		s := credential.NewStore(db, func() time.Time { return now })
		c, pass, err := s.Add(ctx, "sjti/talento", "sistema", "test")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(c.Username, "talento.") || len(c.Username) != len("talento.")+6 || len(pass) != 24 {
			t.Fatalf("credential %+v password %q", c, pass)
		}
		if _, _, err := s.Add(ctx, "sjti/nadie", "", "test"); !errors.Is(err, credential.ErrNotFound) {
			t.Errorf("unknown account: %v", err)
		}
		if _, _, err := s.Add(ctx, "no-slash", "", "test"); !errors.Is(err, credential.ErrInvalid) {
			t.Errorf("bad account name: %v", err)
		}
		got, hash, err := s.Lookup(ctx, c.Username)
		if err != nil || got.Account != "sjti/talento" || got.ID != c.ID {
			t.Fatalf("lookup %+v %v", got, err)
		}
		if ok, err := credential.Verify(hash, pass); !ok || err != nil {
			t.Fatalf("stored hash does not verify the printed password: %v", err)
		}
		state := func(id int64) credential.State {
			t.Helper()
			m, err := s.States(ctx, []int64{id})
			if err != nil {
				t.Fatal(err)
			}
			return m[id]
		}
		// Several at once; an id that does not exist is absent.
		c2, _, err := s.Add(ctx, "sjti/talento", "otro", "test")
		if err != nil {
			t.Fatal(err)
		}
		sts, err := s.States(ctx, []int64{c.ID, c2.ID, c2.ID + 1000})
		if err != nil || len(sts) != 2 || !sts[c.ID].Active || sts[c.ID].Disabled || sts[c.ID].Remaining != 40 || sts[c2.ID] != sts[c.ID] {
			t.Fatalf("states %+v %v", sts, err)
		}
		if _, err := s.Revoke(ctx, c2.Username, "test"); err != nil {
			t.Fatal(err)
		}
		if st := state(c2.ID); st.Active || st.Remaining != 40 {
			t.Fatalf("revoked: %+v", st)
		}
		if _, err := l.SetDisabled(ctx, "sjti/talento", true, "test"); err != nil {
			t.Fatal(err)
		}
		if st := state(c.ID); !st.Disabled {
			t.Fatal("a disabled account is not seen")
		}
		if changed, err := s.Revoke(ctx, c.Username, "test"); !changed || err != nil {
			t.Fatalf("revoke: %v %v", changed, err)
		}
		if changed, err := s.Revoke(ctx, c.Username, "test"); changed || err != nil {
			t.Fatalf("second revoke: %v %v", changed, err)
		}
		if _, err := s.Revoke(ctx, "nadie.abcdef", "test"); !errors.Is(err, credential.ErrNotFound) {
			t.Errorf("revoke unknown: %v", err)
		}
		if _, _, err := s.Lookup(ctx, c.Username); !errors.Is(err, credential.ErrBadCredentials) {
			t.Errorf("lookup of a revoked credential: %v", err)
		}
		if st := state(c.ID); st.Active {
			t.Error("revoked credential still active")
		}
		list, err := s.List(ctx, "")
		if err != nil || len(list) != 2 || list[0].RevokedAt.IsZero() || list[0].Name != "sistema" || list[1].Name != "otro" {
			t.Fatalf("list %+v %v", list, err)
		}
		var actions []string
		if err := db.NewRaw("SELECT action FROM audit_log WHERE action LIKE 'credential.%' ORDER BY id").Scan(ctx, &actions); err != nil {
			t.Fatal(err)
		}
		if strings.Join(actions, ",") != "credential.add,credential.add,credential.revoke,credential.revoke" {
			t.Errorf("audit log %v", actions)
		}
	})
}
