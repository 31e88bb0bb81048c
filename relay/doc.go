// Package relay will be the authenticating SMTP submission server for the
// agency's legacy systems (STARTTLS on 587, implicit TLS on 465, AUTH only
// over TLS), accepting mail through package mailing so that it charges the
// same ledger and writes the same per-recipient record.
//
// Not yet implemented: this package holds no code until the relay issue
// lands. See docs/flow.md for what exists today.
package relay
