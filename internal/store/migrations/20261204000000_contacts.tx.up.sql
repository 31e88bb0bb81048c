-- Contacts, lists and imports (issue 15).
--
-- contacts: one per (account, address); the address normalised (lower
-- case, IDNA A-label domain). attrs are the merge fields (a JSON object of
-- strings). status: active, unsubscribed (asked for no more mail from the
-- account), blocklisted (an admin's decision). Deleting a contact (Ley
-- 29733) removes this row and its memberships, never the mail_recipients
-- rows of mail already sent, which are the agency's record.
--
-- contacts and contact_memberships take millions of rows per import, so
-- they carry no foreign keys (a per-row check doubled an import's time):
-- the code resolves the account and list first and deletes a contact's
-- memberships with it.
CREATE TABLE contacts (
    id         {{.ID}},
    account_id BIGINT NOT NULL,
    address    TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    attrs      {{.JSON}} NOT NULL DEFAULT '{}',
    status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'unsubscribed', 'blocklisted')),
    source     TEXT NOT NULL,
    created_at {{.Time}} NOT NULL,
    updated_at {{.Time}} NOT NULL,
    UNIQUE (account_id, address)
);
--bun:split
-- contact_lists: an account's lists, by unique name.
CREATE TABLE contact_lists (
    id          {{.ID}},
    account_id  BIGINT NOT NULL REFERENCES quota_accounts (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  {{.Time}} NOT NULL,
    created_by  TEXT NOT NULL,
    UNIQUE (account_id, name)
);
--bun:split
-- contact_memberships: a contact on a list, subscribed or unsubscribed
-- from it (an unsubscribed membership is never re-subscribed by an import).
CREATE TABLE contact_memberships (
    list_id    BIGINT NOT NULL,
    contact_id BIGINT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'subscribed' CHECK (status IN ('subscribed', 'unsubscribed')),
    created_at {{.Time}} NOT NULL,
    updated_at {{.Time}} NOT NULL,
    PRIMARY KEY (list_id, contact_id)
);
--bun:split
CREATE INDEX contact_memberships_contact_idx ON contact_memberships (contact_id);
--bun:split
-- contact_imports: one import of a file into a list, with its counts
-- (read = added + updated + unchanged + rejected) and state.
CREATE TABLE contact_imports (
    id          {{.ID}},
    account_id  BIGINT NOT NULL REFERENCES quota_accounts (id),
    list_id     BIGINT NOT NULL REFERENCES contact_lists (id),
    file_name   TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('add', 'update', 'unsubscribe', 'blocklist')),
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    encoding    TEXT NOT NULL DEFAULT '',
    delimiter   TEXT NOT NULL DEFAULT '',
    read        BIGINT NOT NULL DEFAULT 0,
    added       BIGINT NOT NULL DEFAULT 0,
    updated     BIGINT NOT NULL DEFAULT 0,
    unchanged   BIGINT NOT NULL DEFAULT 0,
    rejected    BIGINT NOT NULL DEFAULT 0,
    error       TEXT NOT NULL DEFAULT '',
    actor       TEXT NOT NULL,
    created_at  {{.Time}} NOT NULL,
    started_at  {{.Time}},
    finished_at {{.Time}}
);
--bun:split
-- contact_import_rejects: every row of an import that did not land, with
-- its line, its text and why.
CREATE TABLE contact_import_rejects (
    import_id BIGINT NOT NULL REFERENCES contact_imports (id),
    line      BIGINT NOT NULL,
    raw       TEXT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (import_id, line)
);
