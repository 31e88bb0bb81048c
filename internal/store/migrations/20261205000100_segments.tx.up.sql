-- Saved contact segments: an account's named filter expressions
-- (internal/segment), each stored in its canonical form, by unique name.
-- A segment is evaluated when it is used, so it always selects the
-- contacts that match it then.
CREATE TABLE contact_segments (
    id         {{.ID}},
    account_id BIGINT NOT NULL REFERENCES quota_accounts (id),
    name       TEXT NOT NULL,
    expression TEXT NOT NULL,
    created_at {{.Time}} NOT NULL,
    created_by TEXT NOT NULL,
    updated_at {{.Time}} NOT NULL,
    UNIQUE (account_id, name)
);
