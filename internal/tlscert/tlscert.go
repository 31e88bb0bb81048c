// Package tlscert gives relayd its server certificate: loaded from PEM
// files and reloaded on demand (SIGHUP), or, for the embedded default with
// no certificate configured, a self-signed one generated once into the data
// directory.
package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Holder serves a certificate that can be replaced while connections use
// the old one.
type Holder struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// Load reads a certificate and its key from PEM files.
func Load(certFile, keyFile string) (*Holder, error) {
	h := &Holder{certFile: certFile, keyFile: keyFile}
	if err := h.Reload(); err != nil {
		return nil, err
	}
	return h, nil
}

// Reload reads the files again; on error the current certificate stays.
func (h *Holder) Reload() error {
	c, err := tls.LoadX509KeyPair(h.certFile, h.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s / key %s: %w", h.certFile, h.keyFile, err)
	}
	if c.Leaf != nil && time.Now().After(c.Leaf.NotAfter) {
		return fmt.Errorf("tls certificate %s expired on %s", h.certFile, c.Leaf.NotAfter.Format(time.DateOnly))
	}
	h.cur.Store(&c)
	return nil
}

// Files returns the certificate and key paths.
func (h *Holder) Files() (string, string) { return h.certFile, h.keyFile }

// Config is a server TLS configuration (TLS 1.2 and later) serving the
// current certificate.
func (h *Holder) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return h.cur.Load(), nil
		},
	}
}

// SelfSigned returns the paths of a self-signed certificate for hostname in
// dir (relayd-cert.pem, relayd-key.pem), generating it if it does not
// exist; created reports whether it was generated now.
func SelfSigned(dir, hostname string) (certFile, keyFile string, created bool, err error) {
	certFile, keyFile = filepath.Join(dir, "relayd-cert.pem"), filepath.Join(dir, "relayd-key.pem")
	if _, err := os.Stat(certFile); err == nil {
		return certFile, keyFile, false, nil
	}
	certPEM, keyPEM, err := Generate(hostname, 5*365*24*time.Hour)
	if err != nil {
		return "", "", false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", false, err
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", false, err
	}
	return certFile, keyFile, true, nil
}

// Generate makes a self-signed ECDSA P-256 certificate for hostname (and
// localhost, 127.0.0.1 and ::1), valid for d.
func Generate(hostname string, d time.Duration) (certPEM, keyPEM []byte, err error) {
	if hostname == "" {
		return nil, nil, errors.New("tlscert: a host name is required")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostname, Organization: []string{"envios relayd (self-signed)"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(d),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames(hostname),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		IsCA:         true, BasicConstraintsValid: true, // so clients can pin it as its own CA
	}
	tpl.KeyUsage |= x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

func dnsNames(hostname string) []string {
	if hostname == "localhost" {
		return []string{hostname}
	}
	return []string{hostname, "localhost"}
}
