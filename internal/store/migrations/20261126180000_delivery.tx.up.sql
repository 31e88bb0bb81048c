-- Delivery: DKIM keys and the leases by which engines claim recipients.

CREATE TABLE dkim_keys (
    id          {{.ID}},
    domain      TEXT NOT NULL,
    selector    TEXT NOT NULL,
    algorithm   TEXT NOT NULL CHECK (algorithm IN ('rsa2048', 'ed25519')),
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  {{.Time}} NOT NULL,
    retired_at  {{.Time}},
    UNIQUE (domain, selector)
);
--bun:split
ALTER TABLE mail_recipients ADD COLUMN lease_until {{.Time}};
--bun:split
ALTER TABLE mail_recipients ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
--bun:split
-- Claimed rows whose engine may have died are found by their lease.
CREATE INDEX mail_recipients_lease_idx ON mail_recipients (lease_until) WHERE status = 'sending';
--bun:split
-- Secrets envios generates for itself (the key of VERP and unsubscribe
-- tokens), created on first use.
CREATE TABLE envios_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at {{.Time}} NOT NULL
);
