-- The SMTP submission relay: credentials, failed-login counters that
-- survive a restart, and messages stored as they were submitted.

CREATE TABLE relay_credentials (
    id         {{.ID}},
    account_id BIGINT NOT NULL REFERENCES quota_accounts (id),
    username   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL DEFAULT '',
    hash       TEXT NOT NULL,
    created_at {{.Time}} NOT NULL,
    revoked_at {{.Time}}
);
--bun:split
CREATE INDEX relay_credentials_account_idx ON relay_credentials (account_id);
--bun:split
-- One row per throttled key ("ip:192.0.2.1", "user:eventos.k3x9q2"): the
-- failures counted since window_start.
CREATE TABLE relay_auth_failures (
    key          TEXT PRIMARY KEY,
    window_start {{.Time}} NOT NULL,
    failures     INTEGER NOT NULL
);
--bun:split
-- A message submitted whole (SMTP): the exact bytes to deliver, after the
-- relay's header changes. NULL for messages built by mailing.
ALTER TABLE mail_messages ADD COLUMN raw {{.Blob}};
{{- if .Postgres}}
--bun:split
-- Submitted messages are kept permanently, so compressed; lz4 costs a
-- fraction of the default pglz's CPU. A server built without lz4 keeps
-- pglz.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE mail_messages ALTER COLUMN raw SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 compression unavailable; raw messages use the default';
END
$$;
{{- end}}
