// Package delivery delivers what package mailing accepted: an [Engine]
// claims due recipients with a lease, groups them into SMTP transactions,
// renders each message (internal/mailstore), adds the List-Unsubscribe
// fields to bulk mail (RFC 2369, RFC 8058) and the DKIM signatures of the
// From domain (RFC 6376, relaxed/relaxed, every signed field over-signed),
// hands it to a transport (package mailing/smtpout), and records each
// recipient's outcome — sent, bounced, deferred with backoff, or failed
// past its maximum age — with its event and counters, in batches.
//
// # Lifecycle
//
// Programs get an Engine from mailing.Mailer.NewEngine. [Engine.Run]
// delivers until its context ends, then finishes the deliveries in flight,
// returns the leases of what it claimed but did not start, and returns;
// [Engine.RunOnce] is one round. Several engines may share one PostgreSQL
// database: claims take rows FOR UPDATE SKIP LOCKED, and a row is recorded
// only while it is still leased to the engine that claimed it. An engine
// claims under its node's name (Config.Node) and holds a lock on that name
// for as long as it runs (a PostgreSQL session advisory lock, an flock
// beside a SQLite file), which dies with its process: restarted, it takes
// back its own claims at once; on SQLite, the one engine takes every claim
// left at its start; on PostgreSQL the others take a dead node's claims
// within Config.LivenessCheck. The lease is the last resort, for engines
// that hold no lock. Either way a taken-back recipient counts as attempted
// (it may have been sent just before the crash).
//
// # Guarantees
//
// Delivery is at least once: a recipient whose connection was lost after
// the final dot is deferred as a possible duplicate, never marked sent. An
// outcome's transaction is seen through a lost database connection
// (internal/store.RunInTx), or the leases would expire and the recipients
// be delivered twice. A recipient that fails before any attempt has its
// charge released in the transaction that records it. Per-destination
// limits (concurrency and messages per second, golang.org/x/time/rate)
// defer what would wait too long instead of holding a worker. Through a
// smarthost the destination is the smarthost (Config.Smarthost); in direct
// delivery each MX group adapts (Config.Adaptive: additive increase while
// it accepts, multiplicative decrease on 421, 4.7.x and failed
// connections); Config.Limits fixes a domain's or group's. A warm-up plan
// (Config.WarmUp) caps each provider group's recipients a day, counted in
// the database.
//
// RFCs: 5321 (SMTP), 6376 (DKIM), 2369 and 8058 (List-Unsubscribe and
// one-click), 3463 (enhanced status codes, for throttling replies).
package delivery
