package dkimkey

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// A Sealer encrypts private keys at rest with a key-encryption key kept
// outside the database (a file on the relayd host), so that a copy of the
// database — a backup, a replica, a report user's access — does not give
// away the keys that sign the agency's mail. AES-256-GCM; the domain and
// selector are the associated data, so a sealed key moved to another row
// does not open. A nil *Sealer stores keys in clear (PEM), as before.
type Sealer struct {
	aead cipher.AEAD
}

// sealedPrefix marks a sealed private key in dkim_keys.private_key; a key
// in clear starts with "-----BEGIN".
const sealedPrefix = "envios-sealed-v1:"

// ErrSealed: a key is sealed and no key file was given to open it.
var ErrSealed = errors.New("dkimkey: the private key is sealed")

// NewSealer returns a Sealer for a 32-byte key-encryption key.
func NewSealer(kek []byte) (*Sealer, error) {
	if len(kek) != 32 {
		return nil, fmt.Errorf("dkimkey: a key-encryption key is 32 bytes, not %d", len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// GenerateKeyFile writes a new random key-encryption key to path (base64,
// one line), readable by its owner only. An existing file is never
// replaced: the keys sealed with it would be lost.
func GenerateKeyFile(path string) error {
	kek := make([]byte, 32)
	_, _ = rand.Read(kek) // crypto/rand.Read never fails (Go 1.24+)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("dkimkey: key file: %w", err)
	}
	if _, err := fmt.Fprintln(f, base64.StdEncoding.EncodeToString(kek)); err != nil {
		f.Close()
		return fmt.Errorf("dkimkey: key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("dkimkey: key file: %w", err)
	}
	return f.Close()
}

// OpenKeyFile reads a key file written by GenerateKeyFile. It refuses a
// file that others than its owner may read, as ssh does with its keys.
func OpenKeyFile(path string) (*Sealer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("dkimkey: key file %s may be read by others (mode %v): chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: key file: %w", err)
	}
	kek, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(kek) != 32 {
		return nil, fmt.Errorf("dkimkey: key file %s does not hold a key (one line of base64, 32 bytes; relayd domain keyfile writes one)", path)
	}
	return NewSealer(kek)
}

// Store returns how a secret value is kept in the database: sealed with
// s, bound to label (what it is, e.g. "servir.gob.pe/e20261126" for a DKIM
// key), or in clear when s is nil.
func (s *Sealer) Store(label string, plain []byte) string {
	if s == nil {
		return string(plain)
	}
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return sealedPrefix + base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(label)))
}

// Load returns the value kept as stored under label: opened with s if it
// is sealed (ErrSealed if s is nil or another key file's), as it is if not.
func (s *Sealer) Load(label, stored string) ([]byte, error) {
	b64, sealed := strings.CutPrefix(stored, sealedPrefix)
	if !sealed {
		return []byte(stored), nil
	}
	if s == nil {
		return nil, fmt.Errorf("%w: %s needs the key file it was sealed with (--dkim-key-file)", ErrSealed, label)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	n := s.aead.NonceSize()
	if err != nil || len(b) < n {
		return nil, fmt.Errorf("dkimkey: sealed %s is damaged", label)
	}
	out, err := s.aead.Open(nil, b[:n], b[n:], []byte(label))
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not open with this key file (another key file, or a damaged row)", ErrSealed, label)
	}
	return out, nil
}

// IsSealed reports whether a stored value is sealed.
func IsSealed(stored string) bool { return strings.HasPrefix(stored, sealedPrefix) }

func keyLabel(domain, selector string) string { return domain + "/" + selector }

// SecretLabel is the label of the row of envios_secrets (mailing's token
// keys) named name, which Seal seals with the DKIM keys.
func SecretLabel(name string) string { return "envios_secrets/" + name }

// Seal seals every private key stored in clear, and the token secrets of
// envios_secrets (the key of the HMACs in return paths and unsubscribe
// links), and returns how many values it sealed. Values sealed already are
// left as they are. On SQLite the old rows are overwritten with zeros
// (secure_delete); call Scrub after the commit for what the database keeps
// elsewhere.
func Seal(ctx context.Context, idb bun.IDB, s *Sealer) (int, error) {
	if s == nil {
		return 0, errors.New("dkimkey: sealing needs a key file (--dkim-key-file)")
	}
	if idb.Dialect().Name() == dialect.SQLite {
		if _, err := idb.ExecContext(ctx, "PRAGMA secure_delete = ON"); err != nil {
			return 0, fmt.Errorf("dkimkey: seal: %w", err)
		}
	}
	var rows []row
	if err := idb.NewSelect().Model(&rows).Where("private_key NOT LIKE ?", sealedPrefix+"%").Order("id").Scan(ctx); err != nil {
		return 0, fmt.Errorf("dkimkey: seal: %w", err)
	}
	for _, r := range rows {
		if _, err := idb.NewRaw("UPDATE dkim_keys SET private_key = ? WHERE id = ? AND private_key = ?",
			s.Store(keyLabel(r.Domain, r.Selector), []byte(r.PrivateKey)), r.ID, r.PrivateKey).Exec(ctx); err != nil {
			return 0, fmt.Errorf("dkimkey: seal: %w", err)
		}
	}
	var secrets []struct {
		Name  string
		Value string
	}
	if err := idb.NewRaw("SELECT name, value FROM envios_secrets WHERE value NOT LIKE ? ORDER BY name", sealedPrefix+"%").Scan(ctx, &secrets); err != nil {
		return 0, fmt.Errorf("dkimkey: seal: %w", err)
	}
	for _, sec := range secrets {
		if _, err := idb.NewRaw("UPDATE envios_secrets SET value = ? WHERE name = ? AND value = ?",
			s.Store(SecretLabel(sec.Name), []byte(sec.Value)), sec.Name, sec.Value).Exec(ctx); err != nil {
			return 0, fmt.Errorf("dkimkey: seal: %w", err)
		}
	}
	return len(rows) + len(secrets), nil
}

// Scrub removes, after Seal has committed, the copies of the values in
// clear that the database still holds: on SQLite the old pages in the
// write-ahead log (a checkpoint that truncates it); on PostgreSQL the old
// row versions (VACUUM FULL of dkim_keys and envios_secrets, which
// rewrites those small tables). Backups taken before, and blocks the file system has freed, are
// beyond it: rotate the keys that were stored in clear.
func Scrub(ctx context.Context, db *bun.DB) error {
	q := "VACUUM FULL dkim_keys, envios_secrets"
	if db.Dialect().Name() == dialect.SQLite {
		q = "PRAGMA wal_checkpoint(TRUNCATE)"
	}
	if _, err := db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("dkimkey: scrub: %w", err)
	}
	return nil
}
