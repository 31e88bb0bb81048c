// Package quota is the message-pool ledger: how many messages the agency
// bought for a period, how they are allocated to departmental accounts, and
// every message each account has spent.
//
// # Concepts
//
// A [Pool] is what was bought: a name, a total (8,306,727 messages for
// SERVIR) and a validity period (for example 365 days from a start date).
// An [Account] ("enap/eventos": area and name) holds an allocation from its
// pool and a count of messages used. Every movement is an [Entry] in an
// append-only ledger — the database refuses UPDATE and DELETE on it:
//
//   - allocate: messages move from the pool's unallocated remainder to an account;
//   - transfer: allocation moves between two accounts of the pool;
//   - charge: an account spends messages, one per accepted recipient;
//   - release: a charge is returned, for recipients that ended without any
//     delivery attempt (cancelled, suppressed, expired).
//
// Each entry records the amount, the account(s), the actor, a reason, a
// reference (the message charged for), the [Origin] of the request
// (library, smtp, http, campaign, cli) and the time.
//
// # Charging
//
// [Ledger.Charge] takes a bun.IDB so that it joins the caller's
// transaction: the message, its recipients and their charge commit together
// or not at all. The charge is a single conditional UPDATE
// (used + n <= allocation), never a read followed by a write, so the pool is
// never overdrawn under any concurrency, on PostgreSQL or SQLite. A charge
// the account cannot cover fails whole with an error that matches
// [ErrInsufficient] and carries what remains ([InsufficientError]).
//
// # Invariants
//
// For every pool and account, at every moment: the sum of allocations is at
// most the pool total; used is at most the allocation; used equals the sum
// of charges minus the sum of releases; no reference is released beyond its
// charge. [Ledger.Verify] recomputes all of them from the ledger.
//
// # Lifecycle
//
// A Ledger is a thin handle on a *bun.DB: create it with [New], share it
// between goroutines, and close the database when done. It holds no other
// state.
package quota
