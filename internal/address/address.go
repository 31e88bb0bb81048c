// Package address validates mailboxes: RFC 5322 syntax, RFC 5321 lengths,
// IDNA A-label domains (RFC 5891), ASCII local parts.
package address

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/servir-pe/envios/internal/mailerr"
)

// Address is a validated mailbox: an optional display name and an address
// whose domain is in its ASCII (IDNA A-label) form, lowercased.
type Address struct {
	Name string // display name, may be empty; never contains CR or LF
	Addr string // local@domain
}

// String renders the address for a header (RFC 5322, RFC 2047 for a
// non-ASCII name).
func (a Address) String() string { return (&mail.Address{Name: a.Name, Address: a.Addr}).String() }

// Domain is the part after the @.
func (a Address) Domain() string { return a.Addr[strings.LastIndexByte(a.Addr, '@')+1:] }

// AddressError says why an address was refused. Parse returns it as the
// cause of a *mailerr.Error of kind mailerr.ErrAddress.
type AddressError struct {
	Input  string
	Reason string
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("mailing: invalid address %q: %s", e.Input, e.Reason)
}

// Is makes errors.Is(err, mailerr.ErrAddress) true.
func (e *AddressError) Is(target error) bool { return target == mailerr.ErrAddress }

var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.ValidateLabels(true), idna.StrictDomainName(true), idna.VerifyDNSLength(true))

// Parse validates a mailbox: "user@example.com" or
// "Name <user@example.com>" (RFC 5322), with the limits of RFC 5321 (local
// part at most 64 octets, domain at most 255, whole path at most 254), a
// domain that is a DNS name with at least two labels (internationalised
// names are converted to their A-label form, RFC 5891), and an ASCII local
// part (SMTPUTF8 addresses are not accepted). CR, LF and NUL are refused
// anywhere.
func Parse(s string) (Address, error) {
	bad := func(reason string) (Address, error) {
		ae := &AddressError{Input: s, Reason: reason}
		return Address{}, &mailerr.Error{Kind: mailerr.ErrAddress, Public: fmt.Sprintf("%q: %s", printable(s), reason), Err: ae}
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > 1024 {
		return bad("longer than 1024 bytes")
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return bad("contains CR, LF or NUL")
	}
	if !utf8.ValidString(s) {
		return bad("not valid UTF-8")
	}
	parsed, err := mail.ParseAddress(s)
	if err != nil {
		return bad(strings.TrimPrefix(err.Error(), "mail: "))
	}
	at := strings.LastIndexByte(parsed.Address, '@')
	if at <= 0 || at == len(parsed.Address)-1 {
		return bad("no local part or no domain")
	}
	local, domain := parsed.Address[:at], parsed.Address[at+1:]
	for _, r := range local {
		if r >= utf8.RuneSelf || r < 0x20 || r == 0x7f {
			return bad("local part must be ASCII (SMTPUTF8 is not supported)")
		}
	}
	if len(local) > 64 {
		return bad("local part longer than 64 octets")
	}
	if strings.HasPrefix(domain, "[") {
		return bad("address literals are not accepted; use a domain name")
	}
	ascii, err := idnaProfile.ToASCII(strings.TrimSuffix(domain, "."))
	if err != nil {
		return bad("domain: " + strings.TrimPrefix(err.Error(), "idna: "))
	}
	ascii = strings.ToLower(ascii)
	if !strings.Contains(ascii, ".") {
		return bad("domain must have at least two labels")
	}
	if len(ascii) > 255 {
		return bad("domain longer than 255 octets")
	}
	addr := local + "@" + ascii
	if len(addr) > 254 {
		return bad("longer than 254 octets")
	}
	if strings.ContainsAny(parsed.Name, "\r\n\x00") {
		return bad("display name contains CR, LF or NUL")
	}
	return Address{Name: parsed.Name, Addr: addr}, nil
}

// printable is s cut to 200 bytes, for a public text.
func printable(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
