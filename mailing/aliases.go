package mailing

import (
	"context"
	"net"
	"time"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/mailing/delivery"
	"github.com/servir-pe/envios/mailing/smtpout"
)

// The parts of mailing that live in their own packages, under the names
// programs have always used.

// Address is a validated mailbox: an optional display name and an address
// whose domain is in its ASCII (IDNA A-label) form, lowercased.
type Address = address.Address

// AddressError says why an address was refused; it is the cause of an
// *Error of kind ErrAddress.
type AddressError = address.AddressError

// ParseAddress validates a mailbox: "user@example.com" or
// "Name <user@example.com>" (RFC 5322), with the limits of RFC 5321 (local
// part at most 64 octets, domain at most 255, whole path at most 254), a
// domain that is a DNS name with at least two labels (internationalised
// names are converted to their A-label form, RFC 5891), and an ASCII local
// part (SMTPUTF8 addresses are not accepted). CR, LF and NUL are refused
// anywhere. Its errors are *Error of kind ErrAddress.
func ParseAddress(s string) (Address, error) { return address.Parse(s) }

// Error is every refusal of a request the library decides on its own
// merits: its Kind (one of the Err sentinels, or quota's), the Field it is
// about, a Public text fit for the client, and its cause. errors.Is(err,
// kind) matches it. Any other error is an infrastructure failure (the
// database), worth trying again.
type Error = mailerr.Error

// The kinds of Error.
var (
	// ErrAddress is matched by every address validation error.
	ErrAddress = mailerr.ErrAddress
	// ErrContent is matched by every error about a message's content: a
	// header, a template, a body, an attachment.
	ErrContent = mailerr.ErrContent
	// ErrTooBig: the message is larger than MaxMessageSize.
	ErrTooBig = mailerr.ErrTooBig
	// ErrTooManyRecipients: more recipients than MaxRecipients.
	ErrTooManyRecipients = mailerr.ErrTooManyRecipients
	// ErrNoRecipients: a message without any recipient.
	ErrNoRecipients = mailerr.ErrNoRecipients
	// ErrSenderNotAllowed: the From address is not one of the account's
	// sender identities.
	ErrSenderNotAllowed = mailerr.ErrSenderNotAllowed
	// ErrNoDKIMKey: the From domain has no DKIM key and is not configured
	// to send unsigned.
	ErrNoDKIMKey = mailerr.ErrNoDKIMKey
	// ErrNotFound: no message with that id (for that account).
	ErrNotFound = mailerr.ErrNotFound
	// ErrCancelled: the batch was cancelled while it was being enqueued.
	ErrCancelled = mailerr.ErrCancelled
	// ErrClosed is returned by calls on a Mailer after Shutdown or Close.
	ErrClosed = mailerr.ErrClosed
	// ErrAlreadyRunning is returned by Engine.Run when another live engine
	// holds its node's name (or, on SQLite, delivers from the database).
	ErrAlreadyRunning = delivery.ErrAlreadyRunning
)

// Hour is the counters' time bucket: whole hours since 1970, UTC.
func Hour(t time.Time) int64 { return mailstore.Hour(t) }

// Delivery (package mailing/delivery) and the outbound SMTP client
// (package mailing/smtpout).
type (
	// Engine delivers due recipients; see delivery.Engine.
	Engine = delivery.Engine
	// EngineConfig configures an Engine; see delivery.Config.
	EngineConfig = delivery.Config
	// EngineStats is what an Engine has recorded; see delivery.Stats.
	EngineStats = delivery.Stats
	// Limits caps one destination; see delivery.Limits.
	Limits = delivery.Limits
	// Adaptive shapes the limits of direct delivery's destinations; see
	// delivery.Adaptive.
	Adaptive = delivery.Adaptive
	// SmarthostLimits are the smarthost's limits; see
	// delivery.SmarthostLimits.
	SmarthostLimits = delivery.SmarthostLimits
	// WarmUp is a warm-up plan of daily caps; see delivery.WarmUp.
	WarmUp = delivery.WarmUp
	// WarmUpGroup is one provider group's schedule; see
	// delivery.WarmUpGroup.
	WarmUpGroup = delivery.WarmUpGroup
	// DestinationStats are one destination's limits now; see
	// delivery.DestinationStats.
	DestinationStats = delivery.DestinationStats
	// Transport hands a message to the next hop; see smtpout.Transport.
	Transport = smtpout.Transport
	// Result is what the next hop said about one recipient.
	Result = smtpout.Result
	// Smarthost delivers everything to one relay.
	Smarthost = smtpout.Smarthost
	// DirectMX delivers to each domain's MX hosts.
	DirectMX = smtpout.DirectMX
	// Resolver looks up MX and address records.
	Resolver = smtpout.Resolver
)

// LatencyBuckets are the upper bounds, in seconds, of EngineStats's
// acceptance-to-outcome histogram.
var LatencyBuckets = delivery.LatencyBuckets

// DefaultLimits are the fixed destination limits an Engine applies with
// no EngineConfig.Limits: none, as destinations adapt (see
// delivery.DefaultLimits).
func DefaultLimits() map[string]Limits { return delivery.DefaultLimits() }

// DefaultAdaptive is the adaptive control of direct delivery with its
// defaults filled in.
func DefaultAdaptive() Adaptive { return delivery.DefaultAdaptive() }

// NewResolver returns a resolver that asks only the DNS server at addr
// (host:port), for tests and for sites with their own resolver.
func NewResolver(addr string) *net.Resolver { return smtpout.NewResolver(addr) }

// NewEngine returns an Engine delivering m's queue.
func (m *Mailer) NewEngine(ctx context.Context, cfg EngineConfig) (*Engine, error) {
	return delivery.New(ctx, m.st, cfg)
}
