-- What happens to recipients after acceptance, kept permanently, and the
-- counters reports read instead of scanning the recipient rows.
--
-- mail_events: every delivery attempt (its time, server and reply:
-- DESIGN §3) and every final change without one (a cancellation, a
-- failure before any attempt), written in the same transaction as the
-- recipient row's change, so the live event stream loses none. Acceptance
-- needs no row here: the recipient rows, in id order, are those events.
CREATE TABLE mail_events (
    id           {{.ID}},
    recipient_id BIGINT NOT NULL,
    message_id   TEXT NOT NULL,
    account_id   BIGINT NOT NULL,
    origin       TEXT NOT NULL,
    at           {{.Time}} NOT NULL,
    type         TEXT NOT NULL CHECK (type IN ('sent', 'deferred', 'bounced', 'failed', 'cancelled', 'suppressed')),
    attempt      {{.Bool}} NOT NULL,
    remote_host  TEXT NOT NULL DEFAULT '',
    reply        TEXT NOT NULL DEFAULT ''
);
--bun:split
CREATE INDEX mail_events_recipient_idx ON mail_events (recipient_id, id);
--bun:split
CREATE INDEX mail_events_account_idx ON mail_events (account_id, id);
--bun:split
-- mail_counters: per account, origin, UTC hour (seconds since 1970 / 3600)
-- and kind (accepted, and the event types), how many; updated in the
-- transaction of the change it counts. report verify recounts them.
CREATE TABLE mail_counters (
    account_id BIGINT NOT NULL,
    origin     TEXT NOT NULL,
    hour       BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    n          BIGINT NOT NULL,
    PRIMARY KEY (account_id, origin, hour, kind)
);
