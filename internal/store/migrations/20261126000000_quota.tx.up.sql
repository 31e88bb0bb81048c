-- The message-pool ledger (package quota) and the admin audit log.
-- One file serves both engines: {{.ID}}, {{.Time}} and {{.Bool}} expand to
-- the dialect's types (see internal/store/migrate.go), and the blocks under
-- {{"{{"}}if .Postgres{{"}}"}} hold what only the SQL differs in.

CREATE TABLE quota_pools (
    id          {{.ID}},
    name        TEXT NOT NULL UNIQUE,
    total       BIGINT NOT NULL CHECK (total > 0),
    allocated   BIGINT NOT NULL DEFAULT 0 CHECK (allocated >= 0 AND allocated <= total),
    starts_at   {{.Time}} NOT NULL,
    ends_at     {{.Time}} NOT NULL CHECK (ends_at > starts_at),
    created_at  {{.Time}} NOT NULL
);
--bun:split
CREATE TABLE quota_accounts (
    id          {{.ID}},
    pool_id     BIGINT NOT NULL REFERENCES quota_pools (id),
    name        TEXT NOT NULL UNIQUE,
    area        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    allocation  BIGINT NOT NULL DEFAULT 0 CHECK (allocation >= 0),
    used        BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= allocation),
    disabled    {{.Bool}} NOT NULL DEFAULT FALSE,
    created_at  {{.Time}} NOT NULL
);
--bun:split
CREATE INDEX quota_accounts_pool_idx ON quota_accounts (pool_id);
--bun:split
-- The ledger: append-only (triggers below refuse UPDATE and DELETE).
CREATE TABLE quota_entries (
    id              {{.ID}},
    pool_id         BIGINT NOT NULL REFERENCES quota_pools (id),
    kind            TEXT NOT NULL CHECK (kind IN ('allocate', 'transfer', 'charge', 'release')),
    account_id      BIGINT NOT NULL REFERENCES quota_accounts (id),
    from_account_id BIGINT REFERENCES quota_accounts (id),
    amount          BIGINT NOT NULL CHECK (amount > 0),
    origin          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    reference       TEXT NOT NULL DEFAULT '',
    created_at      {{.Time}} NOT NULL
);
--bun:split
CREATE INDEX quota_entries_account_idx ON quota_entries (account_id, id);
--bun:split
CREATE INDEX quota_entries_from_idx ON quota_entries (from_account_id, id);
--bun:split
CREATE INDEX quota_entries_created_idx ON quota_entries (created_at);
--bun:split
-- What each reference (message) was charged and has had released, so a
-- release can never return more than its charge (a conditional update).
CREATE TABLE quota_refs (
    account_id BIGINT NOT NULL REFERENCES quota_accounts (id),
    reference  TEXT NOT NULL,
    charged    BIGINT NOT NULL CHECK (charged > 0),
    released   BIGINT NOT NULL DEFAULT 0 CHECK (released >= 0 AND released <= charged),
    PRIMARY KEY (account_id, reference)
);
--bun:split
-- Usage counters per account, entry origin and UTC hour, written in the
-- same transaction as each charge and release: days in any whole-hour
-- time zone (America/Lima is UTC-5) are exact sums of 24 buckets.
CREATE TABLE quota_usage (
    account_id BIGINT NOT NULL REFERENCES quota_accounts (id),
    origin     TEXT NOT NULL,
    hour       {{.Time}} NOT NULL,
    charged    BIGINT NOT NULL DEFAULT 0,
    released   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, origin, hour)
);
--bun:split
CREATE INDEX quota_usage_hour_idx ON quota_usage (hour);
--bun:split
CREATE TABLE audit_log (
    id         {{.ID}},
    created_at {{.Time}} NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT ''
);
--bun:split
{{if .Postgres -}}
CREATE FUNCTION envios_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;
--bun:split
CREATE TRIGGER quota_entries_append_only BEFORE UPDATE OR DELETE ON quota_entries
    FOR EACH ROW EXECUTE FUNCTION envios_append_only();
--bun:split
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION envios_append_only();
{{- else -}}
CREATE TRIGGER quota_entries_no_update BEFORE UPDATE ON quota_entries
BEGIN SELECT RAISE(ABORT, 'quota_entries is append-only'); END;
--bun:split
CREATE TRIGGER quota_entries_no_delete BEFORE DELETE ON quota_entries
BEGIN SELECT RAISE(ABORT, 'quota_entries is append-only'); END;
--bun:split
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
--bun:split
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
{{- end}}
