// Package dkimkey generates, stores and loads the DKIM keys envios signs
// with (RFC 6376 with RSA-SHA256, RFC 8463 with Ed25519), and renders the
// DNS TXT records that publish them. Private keys live in the database
// (table dkim_keys, PKCS #8 PEM, sealed with a key file when one is given:
// see Sealer) and are never printed.
package dkimkey

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
)

// Algorithm is a key type.
type Algorithm string

// The supported key types.
const (
	RSA2048 Algorithm = "rsa2048"
	Ed25519 Algorithm = "ed25519"
)

// ErrNotFound: no key for that domain (and selector).
var ErrNotFound = errors.New("dkimkey: no key")

// ErrExists: the domain already has a key with that selector.
var ErrExists = errors.New("dkimkey: selector already in use")

// Key is a stored key. Signer is nil in listings that do not load private keys.
type Key struct {
	Domain    string
	Selector  string
	Algorithm Algorithm
	PublicKey []byte // DER (RSA: SubjectPublicKeyInfo; Ed25519: the raw 32 bytes)
	Signer    crypto.Signer
	Created   time.Time
	Retired   time.Time // zero: in use
	Sealed    bool      // the private key is stored sealed (see Sealer)
}

// Record is the DNS name and TXT value that publish k.
func (k Key) Record() (name, value string) {
	kt := "rsa"
	if k.Algorithm == Ed25519 {
		kt = "ed25519"
	}
	return k.Selector + "._domainkey." + k.Domain, "v=DKIM1; k=" + kt + "; p=" + base64.StdEncoding.EncodeToString(k.PublicKey)
}

var (
	domainPattern   = regexp.MustCompile(`^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	selectorPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)
)

// CheckDomain validates and lowercases a domain name.
func CheckDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	if !domainPattern.MatchString(d) || len(d) > 253 {
		return "", fmt.Errorf("dkimkey: %q is not a domain name", d)
	}
	return d, nil
}

// Generate makes a new key pair.
func Generate(alg Algorithm) (crypto.Signer, []byte, error) {
	switch alg {
	case RSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		return k, der, err
	case Ed25519:
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, []byte(pub), err
	}
	return nil, nil, fmt.Errorf("dkimkey: unknown key type %q (rsa2048 or ed25519)", alg)
}

type row struct {
	bun.BaseModel `bun:"table:dkim_keys"`
	ID            int64 `bun:",pk,autoincrement"`
	Domain        string
	Selector      string
	Algorithm     Algorithm
	PrivateKey    string
	PublicKey     string
	CreatedAt     time.Time
	RetiredAt     *time.Time
}

func (r row) key(withPrivate bool, s *Sealer) (Key, error) {
	pub, err := base64.StdEncoding.DecodeString(r.PublicKey)
	if err != nil {
		return Key{}, fmt.Errorf("dkimkey: %s/%s public key: %w", r.Domain, r.Selector, err)
	}
	k := Key{Domain: r.Domain, Selector: r.Selector, Algorithm: r.Algorithm, PublicKey: pub, Created: r.CreatedAt.UTC(),
		Sealed: IsSealed(r.PrivateKey)}
	if r.RetiredAt != nil {
		k.Retired = r.RetiredAt.UTC()
	}
	if withPrivate {
		pemText, err := s.Load(keyLabel(r.Domain, r.Selector), r.PrivateKey)
		if err != nil {
			return Key{}, err
		}
		block, _ := pem.Decode(pemText)
		if block == nil {
			return Key{}, fmt.Errorf("dkimkey: %s/%s private key is not PEM", r.Domain, r.Selector)
		}
		priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return Key{}, fmt.Errorf("dkimkey: %s/%s private key: %w", r.Domain, r.Selector, err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return Key{}, fmt.Errorf("dkimkey: %s/%s private key of type %T cannot sign", r.Domain, r.Selector, priv)
		}
		k.Signer = signer
	}
	return k, nil
}

// Add generates and stores a key for domain, sealed with s unless s is
// nil. An empty selector becomes "e" + the date ("e20261126"), with a
// suffix if that is taken.
func Add(ctx context.Context, idb bun.IDB, s *Sealer, domain, selector string, alg Algorithm, now time.Time) (Key, error) {
	d, err := CheckDomain(domain)
	if err != nil {
		return Key{}, err
	}
	if selector == "" {
		selector, err = freeSelector(ctx, idb, d, now)
		if err != nil {
			return Key{}, err
		}
	}
	selector = strings.ToLower(selector)
	if !selectorPattern.MatchString(selector) {
		return Key{}, fmt.Errorf("dkimkey: selector %q must be letters, digits and inner hyphens", selector)
	}
	signer, pub, err := Generate(alg)
	if err != nil {
		return Key{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return Key{}, err
	}
	r := row{Domain: d, Selector: selector, Algorithm: alg,
		PrivateKey: s.Store(keyLabel(d, selector), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		PublicKey:  base64.StdEncoding.EncodeToString(pub), CreatedAt: now.UTC()}
	if _, err := idb.NewInsert().Model(&r).Exec(ctx); err != nil {
		if store.IsUniqueViolation(err) {
			return Key{}, fmt.Errorf("%w: %s already has selector %s", ErrExists, d, selector)
		}
		return Key{}, fmt.Errorf("dkimkey: store key: %w", err)
	}
	return Key{Domain: d, Selector: selector, Algorithm: alg, PublicKey: pub, Signer: signer, Created: r.CreatedAt, Sealed: s != nil}, nil
}

func freeSelector(ctx context.Context, idb bun.IDB, domain string, now time.Time) (string, error) {
	base := "e" + now.UTC().Format("20060102")
	for i := 0; i < 100; i++ {
		s := base
		if i > 0 {
			s = fmt.Sprintf("%s-%d", base, i+1)
		}
		n, err := idb.NewSelect().Model((*row)(nil)).Where("domain = ? AND selector = ?", domain, s).Count(ctx)
		if err != nil {
			return "", fmt.Errorf("dkimkey: %w", err)
		}
		if n == 0 {
			return s, nil
		}
	}
	return "", fmt.Errorf("dkimkey: no free selector for %s today", domain)
}

// List returns every key (without private keys), by domain and age.
func List(ctx context.Context, idb bun.IDB) ([]Key, error) {
	var rows []row
	if err := idb.NewSelect().Model(&rows).Order("domain", "created_at", "id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("dkimkey: list: %w", err)
	}
	keys := make([]Key, 0, len(rows))
	for _, r := range rows {
		k, err := r.key(false, nil)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Signing returns the keys to sign mail from domain with: the newest key
// in use of each algorithm, RSA first, opened with s if sealed. None is
// ErrNotFound; a sealed key without s (or with the wrong one) is ErrSealed.
func Signing(ctx context.Context, idb bun.IDB, s *Sealer, domain string) ([]Key, error) {
	var rows []row
	err := idb.NewSelect().Model(&rows).Where("domain = ? AND retired_at IS NULL", strings.ToLower(domain)).
		Order("algorithm DESC", "created_at DESC", "id DESC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: load keys: %w", err)
	}
	var keys []Key
	seen := map[Algorithm]bool{}
	for _, r := range rows {
		if seen[r.Algorithm] {
			continue
		}
		seen[r.Algorithm] = true
		k, err := r.key(true, s)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w for %s", ErrNotFound, domain)
	}
	return keys, nil
}

// Rotate adds, for each algorithm domain has a key of in use, a new key
// under a new selector (sealed with s unless nil); the new keys sign from
// then on. The old keys stay (published and in use) until retired, so mail
// in flight still verifies.
func Rotate(ctx context.Context, idb bun.IDB, s *Sealer, domain string, now time.Time) ([]Key, error) {
	d, err := CheckDomain(domain)
	if err != nil {
		return nil, err
	}
	var algs []Algorithm
	if err := idb.NewRaw("SELECT DISTINCT algorithm FROM dkim_keys WHERE domain = ? AND retired_at IS NULL ORDER BY algorithm DESC", d).Scan(ctx, &algs); err != nil {
		return nil, fmt.Errorf("dkimkey: %w", err)
	}
	if len(algs) == 0 {
		return nil, fmt.Errorf("%w for %s (relayd domain add %s)", ErrNotFound, d, d)
	}
	var keys []Key
	for _, alg := range algs {
		k, err := Add(ctx, idb, s, d, "", alg, now)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Retire stops a key from signing and marks it retired (the row stays, for
// the record); its DNS record can be removed once mail signed with it has
// been delivered.
func Retire(ctx context.Context, idb bun.IDB, domain, selector string, now time.Time) error {
	d, err := CheckDomain(domain)
	if err != nil {
		return err
	}
	res, err := idb.NewRaw("UPDATE dkim_keys SET retired_at = ? WHERE domain = ? AND selector = ? AND retired_at IS NULL",
		now.UTC(), d, strings.ToLower(selector)).Exec(ctx)
	if err != nil {
		return fmt.Errorf("dkimkey: retire: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w in use for %s with selector %s", ErrNotFound, d, selector)
	}
	return nil
}
