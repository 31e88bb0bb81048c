package dkimkey_test

import (
	"context"
	"errors"
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
		if _, err := dkimkey.Signing(ctx, db, "servir.gob.pe"); !errors.Is(err, dkimkey.ErrNotFound) {
			t.Fatalf("no keys yet: %v", err)
		}
		rsa, err := dkimkey.Add(ctx, db, "SERVIR.gob.pe.", "", dkimkey.RSA2048, now)
		if err != nil || rsa.Domain != "servir.gob.pe" || rsa.Selector != "e20261126" {
			t.Fatalf("add: %+v %v", rsa, err)
		}
		if _, err := dkimkey.Add(ctx, db, "servir.gob.pe", "e20261126", dkimkey.Ed25519, now); !errors.Is(err, dkimkey.ErrExists) {
			t.Fatalf("same selector: %v", err)
		}
		ed, err := dkimkey.Add(ctx, db, "servir.gob.pe", "ed", dkimkey.Ed25519, now)
		if err != nil {
			t.Fatal(err)
		}
		if name, value := ed.Record(); name != "ed._domainkey.servir.gob.pe" || !strings.HasPrefix(value, "v=DKIM1; k=ed25519; p=") {
			t.Fatalf("record %s %s", name, value)
		}
		keys, err := dkimkey.Signing(ctx, db, "servir.gob.pe")
		if err != nil || len(keys) != 2 || keys[0].Algorithm != dkimkey.RSA2048 || keys[0].Signer == nil || keys[1].Signer == nil {
			t.Fatalf("signing keys %+v %v", keys, err)
		}
		// Rotation: a new RSA key signs; the old one is kept until retired.
		rot, err := dkimkey.Rotate(ctx, db, "servir.gob.pe", now.Add(time.Hour))
		if err != nil || len(rot) != 2 || rot[0].Algorithm != dkimkey.RSA2048 || rot[0].Selector != "e20261126-2" || rot[1].Selector != "e20261126-3" {
			t.Fatalf("rotate: %+v %v", rot, err)
		}
		keys, _ = dkimkey.Signing(ctx, db, "servir.gob.pe")
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
		keys, _ = dkimkey.Signing(ctx, db, "servir.gob.pe")
		if len(keys) != 1 || keys[0].Algorithm != dkimkey.RSA2048 {
			t.Fatalf("%d signing keys after retiring the Ed25519 ones", len(keys))
		}
		all, err := dkimkey.List(ctx, db)
		if err != nil || len(all) != 4 || all[0].Signer != nil {
			t.Fatalf("list %d keys (private keys must not be loaded): %v", len(all), err)
		}
		for _, bad := range []string{"", "localhost", "a..b", "-x.pe", "x_y.pe"} {
			if _, err := dkimkey.Add(ctx, db, bad, "", dkimkey.Ed25519, now); err == nil {
				t.Errorf("domain %q accepted", bad)
			}
		}
		if _, err := dkimkey.Add(ctx, db, "x.pe", "bad selector", dkimkey.Ed25519, now); err == nil {
			t.Error("selector with a space accepted")
		}
		if _, err := dkimkey.Add(ctx, db, "x.pe", "", "dsa", now); err == nil {
			t.Error("unknown algorithm accepted")
		}
	})
}
