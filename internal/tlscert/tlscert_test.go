package tlscert_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/tlscert"
)

func TestSelfSignedAndReload(t *testing.T) {
	dir := t.TempDir()
	cert, key, created, err := tlscert.SelfSigned(dir, "relay.test")
	if err != nil || !created {
		t.Fatalf("%v %v", created, err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", fi, err)
	}
	if _, _, created, err := tlscert.SelfSigned(dir, "relay.test"); err != nil || created {
		t.Fatalf("second start generated again: %v %v", created, err)
	}
	h, err := tlscert.Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := h.Config()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Fatal("TLS below 1.2 allowed")
	}
	first, _ := cfg.GetCertificate(nil)
	// Replace the files (a renewal) and reload: new connections get the new one.
	c2, k2, err := tlscert.Generate("relay.test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, c2, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, k2, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	second, _ := cfg.GetCertificate(nil)
	if string(first.Certificate[0]) == string(second.Certificate[0]) {
		t.Fatal("reload kept the old certificate")
	}
	// A broken file keeps the current certificate.
	if err := os.WriteFile(cert, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(); err == nil {
		t.Fatal("a broken certificate was loaded")
	}
	third, _ := cfg.GetCertificate(nil)
	if string(third.Certificate[0]) != string(second.Certificate[0]) {
		t.Fatal("a failed reload changed the certificate")
	}
	if _, err := tlscert.Load(filepath.Join(dir, "missing.pem"), key); err == nil {
		t.Fatal("a missing certificate loaded")
	}
}
