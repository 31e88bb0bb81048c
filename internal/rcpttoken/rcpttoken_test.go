package rcpttoken_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

func keyring(t *testing.T, db *bun.DB) *rcpttoken.Keyring {
	t.Helper()
	k, err := rcpttoken.Load(context.Background(), db, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A token names its recipient, in any case; a token changed in any way, or
// made with another installation's secret, names nobody; the secret is
// made once and kept.
func TestTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		k := keyring(t, db)
		again := keyring(t, db)
		tok := k.Token(12345)
		if again.Token(12345) != tok {
			t.Fatal("a second Load made another secret")
		}
		tests := []struct {
			tok  string
			id   int64
			want bool
		}{
			{tok, 12345, true},
			{strings.ToUpper(tok), 12345, true},
			{k.Token(1), 1, true},
			{strings.Replace(tok, "9ix", "9iy", 1), 0, false}, // another id, same MAC
			{tok[:len(tok)-1], 0, false},
			{tok + "a", 0, false},
			{"", 0, false},
			{"-", 0, false},
			{"9ix", 0, false},
			{"zzzzzzzzzzzzzzzzzzzz-" + strings.Split(tok, "-")[1], 0, false},
			{"-1-" + strings.Split(tok, "-")[1], 0, false},
		}
		for _, tt := range tests {
			id, ok := k.Recipient(tt.tok)
			if ok != tt.want || id != tt.id {
				t.Errorf("Recipient(%q) = %d, %v; want %d, %v", tt.tok, id, ok, tt.id, tt.want)
			}
		}
		other := keyring(t, storetest.Open(t, store.SQLite))
		if _, ok := other.Recipient(tok); ok {
			t.Fatal("another installation's secret accepted the token")
		}
	})
}

// FuzzRecipient: whatever the input, Recipient accepts only what Token
// makes, and names the id Token was given.
func FuzzRecipient(f *testing.F) {
	db := storetest.Open(f, store.SQLite)
	k, err := rcpttoken.Load(context.Background(), db, nil, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{k.Token(1), k.Token(987654321), "abc-def", "-", "", "1-", "zz-" + strings.Repeat("a", 16)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, ok := k.Recipient(tok)
		if !ok {
			return
		}
		if id <= 0 || !strings.EqualFold(k.Token(id), tok) {
			t.Fatalf("Recipient(%q) = %d, but Token(%d) = %q", tok, id, id, k.Token(id))
		}
	})
}
