// Package relay is the authenticating SMTP submission server (RFC 6409) for
// the agency's legacy systems: they point their SMTP settings (host, port
// 587 or 465, username, password) at it, and every message they submit is
// accepted through package mailing, so it charges the same message pool and
// gets the same per-recipient record as mail sent from Go or over HTTPS.
//
// # Lifecycle
//
// New returns a Server from a Config; Serve(l) speaks SMTP with STARTTLS
// on a listener (port 587), ServeTLS(l) SMTP over implicit TLS (port 465,
// RFC 8314). Shutdown(ctx) stops accepting, lets sessions finish their
// current command and closes them; Close closes everything at once. Both
// make Serve return ErrServerClosed, as net/http does.
//
// # What a session may do
//
//   - AUTH PLAIN (RFC 4616) and LOGIN are advertised and accepted only after
//     TLS (RFC 3207); before it AUTH is 523 5.7.10. A PLAIN authorisation
//     identity must be empty or the username. A credential (package
//     internal/credential, `relayd credential add`) belongs to one account;
//     revoking it refuses the session's next command.
//   - Wrong credentials get 535 5.7.8 after Limits.AuthDelay, whatever the
//     reason. After Limits.AuthFailures failures within Limits.AuthWindow
//     from one IP address, or for one username, AUTH is answered 421 4.7.0
//     and the connection closed; the counters are in the database, so a
//     restart does not reset them. A database failure during AUTH is 454
//     4.7.0, never 535.
//   - MAIL FROM and the message's From (and Sender) must be sender
//     identities of the account (553 5.7.1); MAIL without AUTH is 530 5.7.0.
//   - At RCPT, a recipient the account's remaining pool cannot cover is
//     452 4.7.1, naming the account and what is left; more than
//     Limits.MaxRecipients is 452 4.5.3.
//   - DATA is read within Limits: size (SIZE advertised, RFC 1870; 552
//     5.3.4), line length, header size and count, timeouts and a whole
//     session deadline. A bare CR or LF anywhere — which is what every SMTP
//     smuggling variant (<LF>.<LF>, <CR>.<CR>, <LF>.<CR><LF> …) contains —
//     refuses the message with 550 5.6.0; only <CR><LF>.<CR><LF> ends DATA,
//     so one DATA is never two messages.
//   - The message then goes to mailing.Mailer.Submit: Bcc, Resent-Bcc,
//     Return-Path and Content-Length removed, Message-ID and Date added when
//     missing, a Received field put on top (RFC 5321 §4.4; "with ESMTPSA",
//     RFC 3848; the client's address left out with
//     Config.HideClientAddress), the X-Envios- directive fields (send-at,
//     idempotency key, campaign, priority, tags) read and removed.
//     250 is answered only after the message, its recipients and the charge
//     have committed; concurrent sessions share commits (group commit).
//
// Malformed SASL base64 is 501 5.5.2 (RFC 4954), STARTTLS with a
// parameter 501 5.5.4 (RFC 3207), an unknown command 500 5.5.2. Paths are
// read by RFC 5321's grammar (§4.1.2), as a submission server should
// rather than a lenient MX: a MAIL or RCPT path without angle brackets,
// without a domain, or with a comment is 501 5.1.7 (MAIL) or 501 5.1.3
// (RCPT); a source route is accepted and ignored (§4.1.1.3), so the
// recipient stored is the mailbox after it; a second MAIL inside a
// transaction is 503 5.5.1.
//
// Every error reaches the client through one function, reply, which maps
// domain errors to SMTP replies (DESIGN.md §3) and never echoes internal
// error text: any infrastructure failure, at any stage, is 451 4.3.0.
package relay
