// Package mailing will be the library the agency's Go systems import to
// enqueue personalised mail: one message, a batch with per-recipient data,
// or a campaign; scheduling, cancellation, idempotency and status. It owns
// the durable per-recipient queue and the delivery engine, and charges the
// message pool through package quota in the same transaction that stores
// each message.
//
// Not yet implemented: this package holds no code until the mailing issue
// lands. See docs/flow.md for what exists today.
package mailing
