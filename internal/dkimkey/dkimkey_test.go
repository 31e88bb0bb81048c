package dkimkey_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/storetest"
)

func TestKeyLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		if _, err := dkimkey.Signing(ctx, db, nil, "servir.gob.pe"); !errors.Is(err, dkimkey.ErrNotFound) {
			t.Fatalf("no keys yet: %v", err)
		}
		rsa, err := dkimkey.Add(ctx, db, nil, "SERVIR.gob.pe.", "", dkimkey.RSA2048, now)
		if err != nil || rsa.Domain != "servir.gob.pe" || rsa.Selector != "e20261126" {
			t.Fatalf("add: %+v %v", rsa, err)
		}
		if _, err := dkimkey.Add(ctx, db, nil, "servir.gob.pe", "e20261126", dkimkey.Ed25519, now); !errors.Is(err, dkimkey.ErrExists) {
			t.Fatalf("same selector: %v", err)
		}
		ed, err := dkimkey.Add(ctx, db, nil, "servir.gob.pe", "ed", dkimkey.Ed25519, now)
		if err != nil {
			t.Fatal(err)
		}
		if name, value := ed.Record(); name != "ed._domainkey.servir.gob.pe" || !strings.HasPrefix(value, "v=DKIM1; k=ed25519; p=") {
			t.Fatalf("record %s %s", name, value)
		}
		keys, err := dkimkey.Signing(ctx, db, nil, "servir.gob.pe")
		if err != nil || len(keys) != 2 || keys[0].Algorithm != dkimkey.RSA2048 || keys[0].Signer == nil || keys[1].Signer == nil {
			t.Fatalf("signing keys %+v %v", keys, err)
		}
		// Rotation: a new RSA key signs; the old one is kept until retired.
		rot, err := dkimkey.Rotate(ctx, db, nil, "servir.gob.pe", now.Add(time.Hour))
		if err != nil || len(rot) != 2 || rot[0].Algorithm != dkimkey.RSA2048 || rot[0].Selector != "e20261126-2" || rot[1].Selector != "e20261126-3" {
			t.Fatalf("rotate: %+v %v", rot, err)
		}
		keys, _ = dkimkey.Signing(ctx, db, nil, "servir.gob.pe")
		if keys[0].Selector != "e20261126-2" || keys[1].Selector != "e20261126-3" {
			t.Fatalf("after rotation signing with %s and %s", keys[0].Selector, keys[1].Selector)
		}
		for _, sel := range []string{"ed", "e20261126-3"} {
			if err := dkimkey.Retire(ctx, db, "servir.gob.pe", sel, now); err != nil {
				t.Fatal(err)
			}
		}
		if err := dkimkey.Retire(ctx, db, "servir.gob.pe", "ed", now); !errors.Is(err, dkimkey.ErrNotFound) {
			t.Fatalf("retire twice: %v", err)
		}
		keys, _ = dkimkey.Signing(ctx, db, nil, "servir.gob.pe")
		if len(keys) != 1 || keys[0].Algorithm != dkimkey.RSA2048 {
			t.Fatalf("%d signing keys after retiring the Ed25519 ones", len(keys))
		}
		all, err := dkimkey.List(ctx, db)
		if err != nil || len(all) != 4 || all[0].Signer != nil {
			t.Fatalf("list %d keys (private keys must not be loaded): %v", len(all), err)
		}
		for _, bad := range []string{"", "localhost", "a..b", "-x.pe", "x_y.pe"} {
			if _, err := dkimkey.Add(ctx, db, nil, bad, "", dkimkey.Ed25519, now); err == nil {
				t.Errorf("domain %q accepted", bad)
			}
		}
		if _, err := dkimkey.Add(ctx, db, nil, "x.pe", "bad selector", dkimkey.Ed25519, now); err == nil {
			t.Error("selector with a space accepted")
		}
		if _, err := dkimkey.Add(ctx, db, nil, "x.pe", "", "dsa", now); err == nil {
			t.Error("unknown algorithm accepted")
		}
	})
}

// A key added with a Sealer is stored sealed and signs once opened with
// it; without it, with another key file, or moved to another row it does
// not open; Seal seals keys stored in clear, once.
func TestSealedKeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
		dir := t.TempDir()
		path := filepath.Join(dir, "dkim.key")
		if err := dkimkey.GenerateKeyFile(path); err != nil {
			t.Fatal(err)
		}
		if err := dkimkey.GenerateKeyFile(path); err == nil {
			t.Fatal("an existing key file was replaced")
		}
		s, err := dkimkey.OpenKeyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		other := filepath.Join(dir, "other.key")
		if err := dkimkey.GenerateKeyFile(other); err != nil {
			t.Fatal(err)
		}
		s2, err := dkimkey.OpenKeyFile(other)
		if err != nil {
			t.Fatal(err)
		}
		clearKey, err := dkimkey.Add(ctx, db, nil, "servir.gob.pe", "c", dkimkey.RSA2048, now)
		if err != nil || clearKey.Sealed {
			t.Fatalf("%+v %v", clearKey, err)
		}
		sealed, err := dkimkey.Add(ctx, db, s, "enap.gob.pe", "s", dkimkey.Ed25519, now)
		if err != nil || !sealed.Sealed {
			t.Fatalf("%+v %v", sealed, err)
		}
		var stored string
		if err := db.NewRaw("SELECT private_key FROM dkim_keys WHERE selector = 's'").Scan(ctx, &stored); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(stored, "PRIVATE KEY") || !strings.HasPrefix(stored, "envios-sealed-v1:") {
			t.Fatalf("stored %q", stored)
		}
		keys, err := dkimkey.Signing(ctx, db, s, "enap.gob.pe")
		if err != nil || len(keys) != 1 || keys[0].Signer == nil {
			t.Fatalf("open with the key file: %v %v", keys, err)
		}
		msg := []byte("hola")
		sig, err := keys[0].Signer.Sign(nil, msg, crypto.Hash(0))
		if err != nil || !ed25519.Verify(ed25519.PublicKey(sealed.PublicKey), msg, sig) {
			t.Fatalf("the opened key does not sign for its public key: %v", err)
		}
		for name, sl := range map[string]*dkimkey.Sealer{"no key file": nil, "another key file": s2} {
			if _, err := dkimkey.Signing(ctx, db, sl, "enap.gob.pe"); !errors.Is(err, dkimkey.ErrSealed) {
				t.Errorf("%s: %v, want ErrSealed", name, err)
			}
		}
		// A sealed key copied into another row does not open there.
		if _, err := dkimkey.Add(ctx, db, s, "enap.gob.pe", "t", dkimkey.Ed25519, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.NewRaw("UPDATE dkim_keys SET private_key = ? WHERE selector = 't'", stored).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := dkimkey.Signing(ctx, db, s, "enap.gob.pe"); !errors.Is(err, dkimkey.ErrSealed) {
			t.Fatalf("a sealed key moved to another selector opened: %v", err)
		}
		// Seal: the key in clear and the token secret in clear, and only
		// them; keys in clear still open with a Sealer, sealed ones too.
		if _, err := db.NewRaw("INSERT INTO envios_secrets (name, value, created_at) VALUES ('token', 'c0ffee', ?)", now).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := dkimkey.Seal(ctx, db, s); err != nil || n != 2 {
			t.Fatalf("seal %d %v", n, err)
		}
		var secret string
		if err := db.NewRaw("SELECT value FROM envios_secrets WHERE name = 'token'").Scan(ctx, &secret); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Load(dkimkey.SecretLabel("token"), secret); !dkimkey.IsSealed(secret) || err != nil || string(v) != "c0ffee" {
			t.Fatalf("sealed secret %q opens to %q, %v", secret, v, err)
		}
		if _, err := s.Load(dkimkey.SecretLabel("other"), secret); !errors.Is(err, dkimkey.ErrSealed) {
			t.Fatalf("a sealed secret opened under another name: %v", err)
		}
		if n, err := dkimkey.Seal(ctx, db, s); err != nil || n != 0 {
			t.Fatalf("second seal %d %v", n, err)
		}
		if err := dkimkey.Scrub(ctx, db); err != nil {
			t.Fatal(err)
		}
		if keys, err := dkimkey.Signing(ctx, db, s, "servir.gob.pe"); err != nil || keys[0].Signer == nil {
			t.Fatalf("sealed by Seal: %v", err)
		}
		if _, err := dkimkey.Signing(ctx, db, nil, "servir.gob.pe"); !errors.Is(err, dkimkey.ErrSealed) {
			t.Fatalf("after Seal, without the key file: %v", err)
		}
		list, err := dkimkey.List(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range list {
			if !k.Sealed {
				t.Fatalf("%s/%s not sealed after Seal", k.Domain, k.Selector)
			}
		}
	})
}

// Key files: refused when others may read them, or when they hold no key.
func TestOpenKeyFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"readable", "", 0o644, "may be read by others"},
		{"garbage", "not base64!\n", 0o600, "does not hold a key"},
		{"short", "c2hvcnQ=\n", 0o600, "does not hold a key"},
		{"missing", "-", 0o600, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			switch tc.content {
			case "":
				if err := dkimkey.GenerateKeyFile(path); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil {
					t.Fatal(err)
				}
			case "-":
			default:
				if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := dkimkey.OpenKeyFile(path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
