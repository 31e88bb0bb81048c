// Package report will answer per-recipient, per-message, per-campaign and
// per-account questions about what was sent, keep totals by account,
// origin and day, stream exports and a live event feed.
//
// Not yet implemented: this package holds no code until the report issue
// lands. Usage totals by day, account and origin are already available
// from the ledger: quota.Ledger.Usage and `relayd quota usage`.
package report
