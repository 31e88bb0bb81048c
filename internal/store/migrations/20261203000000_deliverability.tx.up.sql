-- Bounces, complaints, suppression and unsubscribe (issue 14).
--
-- mail_suppressions: the addresses mail is not sent to, by scope: 'all'
-- (a hard bounce: every message, transactional too), 'bulk' (a complaint:
-- all bulk mail of every account), 'account' (an unsubscribe: the bulk
-- mail of one account, of one topic — a campaign label — or, with topic '',
-- all of it). Expiry is evaluated in the lookup itself (expires_at NULL:
-- never). Rows are never deleted: a removal sets removed_at, removed_by and
-- removed_reason once, and the audit log keeps both entries.
CREATE TABLE mail_suppressions (
    id             {{.ID}},
    address        TEXT NOT NULL,
    scope          TEXT NOT NULL CHECK (scope IN ('all', 'bulk', 'account')),
    account_id     BIGINT,
    topic          TEXT NOT NULL DEFAULT '',
    reason         TEXT NOT NULL CHECK (reason IN ('hard_bounce', 'soft_streak', 'complaint', 'unsubscribe', 'manual', 'import')),
    created_at     {{.Time}} NOT NULL,
    expires_at     {{.Time}},
    actor          TEXT NOT NULL,
    recipient_id   BIGINT,
    evidence       TEXT NOT NULL DEFAULT '',
    removed_at     {{.Time}},
    removed_by     TEXT NOT NULL DEFAULT '',
    removed_reason TEXT NOT NULL DEFAULT '',
    CHECK ((scope = 'account') = (account_id IS NOT NULL))
);
--bun:split
CREATE INDEX mail_suppressions_address_idx ON mail_suppressions (address) WHERE removed_at IS NULL;
--bun:split
CREATE INDEX mail_suppressions_created_idx ON mail_suppressions (created_at, id);
--bun:split
{{if .Postgres -}}
CREATE FUNCTION envios_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME;
END
$$;
--bun:split
CREATE TRIGGER mail_suppressions_no_delete BEFORE DELETE ON mail_suppressions
    FOR EACH ROW EXECUTE FUNCTION envios_no_delete();
{{- else -}}
CREATE TRIGGER mail_suppressions_no_delete BEFORE DELETE ON mail_suppressions
BEGIN SELECT RAISE(ABORT, 'mail_suppressions rows are never deleted'); END;
{{- end}}
--bun:split
-- mail_failure_streaks: per address and class (transient, disabled), the
-- failures since the last delivery to it: the soft streak that suppresses
-- an address after 3 transient failures spanning 14 days, and the second
-- "account disabled" 7 days after the first. A delivery ends the streak.
CREATE TABLE mail_failure_streaks (
    address  TEXT NOT NULL,
    class    TEXT NOT NULL,
    first_at {{.Time}} NOT NULL,
    last_at  {{.Time}} NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (address, class)
);
--bun:split
-- mail_inbound: every message the MX of the sending domain accepted, kept
-- permanently: its first 256 KiB, its size and SHA-256, who sent it, to
-- which of our addresses, the recipient its token names (NULL for
-- postmaster@, abuse@, fbl@), and what reading it found.
CREATE TABLE mail_inbound (
    id           {{.ID}},
    received_at  {{.Time}} NOT NULL,
    remote_addr  TEXT NOT NULL,
    helo         TEXT NOT NULL,
    mail_from    TEXT NOT NULL,
    rcpt         TEXT NOT NULL,
    mailbox      TEXT NOT NULL CHECK (mailbox IN ('bounce', 'unsubscribe', 'postmaster', 'abuse', 'fbl')),
    recipient_id BIGINT,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    raw          {{.Blob}} NOT NULL,
    truncated    {{.Bool}} NOT NULL,
    kind         TEXT NOT NULL DEFAULT '',
    result       TEXT NOT NULL DEFAULT ''
);
--bun:split
CREATE INDEX mail_inbound_recipient_idx ON mail_inbound (recipient_id) WHERE recipient_id IS NOT NULL;
--bun:split
-- mail_events learns the feedback events (delayed, complained,
-- unsubscribed), and each event its class (a failure's: hard, transient,
-- policy…) and detail (JSON: status, diagnostic, reporting MTA, method,
-- scope, sync or async).
{{if .Postgres -}}
ALTER TABLE mail_events DROP CONSTRAINT mail_events_type_check;
--bun:split
ALTER TABLE mail_events ADD CONSTRAINT mail_events_type_check
    CHECK (type IN ('sent', 'deferred', 'bounced', 'failed', 'cancelled', 'suppressed', 'delayed', 'complained', 'unsubscribed'));
--bun:split
ALTER TABLE mail_events ADD COLUMN class TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE mail_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
{{- else -}}
CREATE TABLE mail_events_new (
    id           {{.ID}},
    recipient_id BIGINT NOT NULL,
    message_id   TEXT NOT NULL,
    account_id   BIGINT NOT NULL,
    origin       TEXT NOT NULL,
    at           {{.Time}} NOT NULL,
    type         TEXT NOT NULL CHECK (type IN ('sent', 'deferred', 'bounced', 'failed', 'cancelled', 'suppressed', 'delayed', 'complained', 'unsubscribed')),
    attempt      {{.Bool}} NOT NULL,
    remote_host  TEXT NOT NULL DEFAULT '',
    reply        TEXT NOT NULL DEFAULT '',
    class        TEXT NOT NULL DEFAULT '',
    detail       TEXT NOT NULL DEFAULT ''
);
--bun:split
INSERT INTO mail_events_new (id, recipient_id, message_id, account_id, origin, at, type, attempt, remote_host, reply)
    SELECT id, recipient_id, message_id, account_id, origin, at, type, attempt, remote_host, reply FROM mail_events;
--bun:split
DROP TABLE mail_events;
--bun:split
ALTER TABLE mail_events_new RENAME TO mail_events;
--bun:split
CREATE INDEX mail_events_recipient_idx ON mail_events (recipient_id, id);
--bun:split
CREATE INDEX mail_events_account_idx ON mail_events (account_id, id);
{{- end}}
--bun:split
-- The reason a recipient was suppressed at acceptance or at claim.
ALTER TABLE mail_recipients ADD COLUMN suppressed_by BIGINT;
