// Package rcpttoken makes and checks recipient tokens: a recipient row's
// id and an HMAC of it under a secret kept in the database (envios_secrets,
// sealed with the key file when there is one). A token names its recipient
// in the envelope sender of a delivery (b+TOKEN@, so a bounce maps back to
// it) and in unsubscribe links (u+TOKEN@ and the one-click URL); nobody
// without the secret can make one.
package rcpttoken

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/dkimkey"
)

// Keyring makes and checks tokens with one secret.
type Keyring struct {
	key []byte
}

// Load returns the keyring of the installation, creating its secret on
// first use. sealer may be nil (the secret is kept in clear).
func Load(ctx context.Context, db bun.IDB, sealer *dkimkey.Sealer, now time.Time) (*Keyring, error) {
	key, err := secret(ctx, db, sealer, "token_key", now)
	if err != nil {
		return nil, err
	}
	return &Keyring{key: key}, nil
}

// secret returns the named secret, creating it on first use.
func secret(ctx context.Context, db bun.IDB, sealer *dkimkey.Sealer, name string, now time.Time) ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	label := dkimkey.SecretLabel(name)
	_, err := db.NewRaw("INSERT INTO envios_secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
		name, sealer.Store(label, []byte(hex.EncodeToString(b))), now).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("rcpttoken: create secret: %w", err)
	}
	var v string
	if err := db.NewRaw("SELECT value FROM envios_secrets WHERE name = ?", name).Scan(ctx, &v); err != nil {
		return nil, fmt.Errorf("rcpttoken: read secret: %w", err)
	}
	h, err := sealer.Load(label, v)
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(string(h))
}

var encoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Token is recipient id's token: its id in base 36, "-", and 80 bits of
// HMAC-SHA256 in lowercase base32.
func (k *Keyring) Token(recipientID int64) string {
	id := strconv.FormatInt(recipientID, 36)
	mac := hmac.New(sha256.New, k.key)
	mac.Write([]byte(id))
	return id + "-" + strings.ToLower(encoding.EncodeToString(mac.Sum(nil)[:10]))
}

// Recipient checks a token (in any case) and returns the recipient it
// names.
func (k *Keyring) Recipient(tok string) (int64, bool) {
	tok = strings.ToLower(tok)
	s, _, ok := strings.Cut(tok, "-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(s, 36, 64)
	if err != nil || id <= 0 || !hmac.Equal([]byte(k.Token(id)), []byte(tok)) {
		return 0, false
	}
	return id, true
}
