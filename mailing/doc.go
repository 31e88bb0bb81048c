// Package mailing is how the agency's Go systems send mail through envios,
// and the one path by which any message — from this library, the SMTP
// relay or the HTTPS API — is accepted.
//
// # Accepting a message
//
// [Mailer.Send] takes one [Message] (From, Reply-To, To/Cc/Bcc, Subject,
// text and/or HTML, attachments and inline images, extra headers, tags, a
// campaign, a priority, a send-at time, an idempotency key). It validates
// everything first — addresses per RFC 5321/5322 with internationalised
// domains (RFC 5891), no CR or LF in any header value, sizes, the sender
// identity, the account — and then, in one transaction, charges the account
// one message per recipient through package quota, stores the message and
// one row per recipient. When Send returns nil the message is committed;
// when it returns an error nothing was stored or charged.
//
// [Mailer.SendBatch] takes one [Batch]: templates (Subject and Text with
// text/template, HTML with html/template) and a stream of recipients, each
// with its own data. Templates are parsed once; each recipient is rendered
// at acceptance (a missing field is an error, never "<no value>"; data is
// never executed as a template) and becomes its own message with its own
// Message-ID. Recipients are committed in chunks, each with its charge, so
// a million recipients enqueue in bounded memory; an idempotency key makes
// a retried batch resume where it stopped.
//
// [Mailer.Submit] takes a message submitted whole, as an SMTP client sends
// it (the relay's path): it checks and changes it as a submission server
// does (RFC 6409 §8: one From; Bcc, Resent-Bcc, Return-Path and
// Content-Length removed; Message-ID and Date added; with a [Trace], a
// Received field on top, RFC 5321 §4.4) and reads the X-Envios- directive
// fields, then stores the exact bytes to deliver.
//
// Send and Submit share commits: a validated message is queued, and one
// caller commits everything queued in one transaction, each message still
// decided alone (group commit). A call returns only after its message's
// transaction has committed. A transaction that loses its PostgreSQL
// connection is run again if it did not commit, and one whose COMMIT reply
// was lost is resolved by asking the server (txid_status): a call returns
// an error for a message that is stored only if the server cannot be
// asked either (the error then says the outcome is unknown).
//
// # What happened
//
// Every delivery attempt and every final change is an event (Mailer.Attempts
// lists a recipient's attempts), and hourly counters per account, origin
// and kind are updated in the transaction of each change; package report
// reads both.
//
// # Lifecycle
//
// Create a Mailer with [New] on a migrated *bun.DB, or [Open] with a DSN
// (a postgres:// URL or a SQLite file). It is safe for concurrent use and
// holds no global state. [Mailer.Shutdown] refuses new calls and waits for
// those in flight; [Mailer.Close] does the same without a deadline.
//
// Each recipient row is both the delivery queue (status, priority, due
// time) and the permanent log (accepted, attempted and final times, remote
// server and reply). [Mailer.Message], [Mailer.Recipients] and
// [Mailer.Messages] read them; [Mailer.Cancel] stops what is not yet sent
// and returns the charge of recipients never attempted;
// [Mailer.PromoteDue] marks scheduled recipients queued when their time
// comes; [Mailer.Render] builds a recipient's exact RFC 5322 message
// (RFC 2045–2047 MIME, via enmime) for delivery.
//
// # Errors
//
// Every refusal of a request is an [*Error]: its Kind is one of the
// sentinels ([ErrAddress], [ErrContent], [ErrTooBig], [ErrTooManyRecipients],
// [ErrNoRecipients], [ErrSenderNotAllowed], [ErrNoDKIMKey], [ErrNotFound],
// [ErrCancelled], [ErrClosed]) or of package quota's (quota.ErrInsufficient,
// whose cause is a *quota.InsufficientError with what remains;
// quota.ErrDisabled, quota.ErrNotFound, quota.ErrOutsidePeriod,
// quota.ErrInvalid); its Field names the input it is about (as the HTTPS API
// names it: "from", "to", "subject", "headers", "attachments", "data", …);
// its Public text says what was wrong and is fit for the client.
// errors.Is(err, kind) matches it. Any error that is not an *Error is a
// failure of the infrastructure (the database) and worth trying again. The
// relay and the HTTPS API each translate an Error by its Kind in one
// function; neither reads error text.
//
// # Delivery and the parts around it
//
// Delivery is package [github.com/servir-pe/envios/mailing/delivery] (the
// [Engine] that claims due recipients, renders, signs, sends and records
// each outcome), and the outbound SMTP client is package
// [github.com/servir-pe/envios/mailing/smtpout] ([Smarthost], [DirectMX]).
// Both are reached from here too: [Mailer.NewEngine] and the aliases
// [Engine], [EngineConfig], [Transport], [Result], [Smarthost] and
// [DirectMX] keep the names programs have always used. Package
// [github.com/servir-pe/envios/mailing/mailtest] has an in-memory SMTP sink
// and a DNS server for tests.
//
// # Sender identities
//
// An account may only send as the addresses and domains it was given
// ([Mailer.AddSender], `relayd sender add ACCOUNT ADDRESS|@DOMAIN`);
// anything else is [ErrSenderNotAllowed].
package mailing
