// Package report answers what happened to the mail envios accepted: every
// recipient row to an address, of a message, of a campaign, of an account
// in a period; totals per account, origin and day, month or year; the event
// stream; and
// exports of any size as CSV or JSON Lines.
//
// # What it reads
//
// Everything comes from the tables package mailing writes and never
// prunes: mail_recipients (one row per recipient: the queue and the
// permanent log — status, time of acceptance, attempts, time of the last
// attempt and of the final outcome, remote server and its reply),
// mail_messages (subject, campaign), mail_tags and quota_accounts. The
// package only reads; it never changes a row.
//
// # Scoping
//
// Every question takes a [Filter]. A non-empty Filter.Account restricts
// every query to that account's rows: a message, campaign or address of
// another account is answered exactly as one that does not exist
// ([ErrNotFound], or no rows). An empty Account is the administrator's
// view of all accounts.
//
// # Addresses
//
// Lookups by address ignore case: the stored address and the one asked
// for are compared lowercased (address.Parse already lowercases
// the domain and converts it to its A-label form, RFC 5891; the local part
// is kept as sent, RFC 5321 §2.4). The index mail_recipients_address_lower_idx
// on (lower(address), id) serves the lookup and its keyset paging.
//
// # Pages and streams
//
// List queries return a [Page] of at most [MaxPage] rows in recipient id
// order, with the id to continue after (keyset pagination: the cost of a
// page does not grow with how far into the result it is). [Reporter.All]
// and [Reporter.Export] stream every matching row from one query whose
// rows are read as they arrive, so memory stays flat however many rows
// match; on PostgreSQL the export is one consistent snapshot.
//
// # Totals
//
// [Reporter.Activity] answers what happened per day, month or year (or per
// account or origin) for each account and origin: recipients accepted,
// sent, deferring attempts, bounced, failed, cancelled. It reads the
// counters (mail_counters) package mailing updates in the transaction of
// each change, never scanning the recipients; the database sums their
// hours into the periods of [Config.Location]. [Reporter.Verify] recounts
// every counter from the rows it summarises (relayd report verify).
// [Reporter.Totals] is the query-time alternative: recipients by their
// status now per period of acceptance, a GROUP BY over the recipient rows.
//
// # Events
//
// [Reporter.Events] reads the event stream after a [Cursor]: acceptances
// (the recipient rows by id) and attempts and final changes (mail_events,
// written with the change), a couple of seconds behind the commits so
// that no transaction that took lower ids but committed later is skipped.
// relayd report log --follow and the API's Server-Sent Events use it.
//
// # Exports
//
// [Reporter.Export] writes CSV (RFC 4180: a header row, quoting by
// encoding/csv) or JSON Lines (one object per line). A CSV cell that a
// spreadsheet would run as a formula — starting with '=', '+', '-', '@',
// a tab or a carriage return — is written with a leading single quote
// (CSV injection, OWASP). Times are RFC 3339, to the second, in
// Config.Location.
//
// # Time
//
// Times are stored in UTC and returned in Config.Location, America/Lima
// by default.
//
// # Lifecycle
//
// A Reporter is a thin handle on a *bun.DB: create it with [New], share it
// between goroutines, close the database when done.
package report
