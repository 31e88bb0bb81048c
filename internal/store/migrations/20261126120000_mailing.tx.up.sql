-- Package mailing: sender identities, messages and their content, and the
-- per-recipient rows that are both the delivery queue and the permanent
-- log. Nothing here is ever deleted automatically.

-- The From addresses ("user@domain") or whole domains ("@domain") an
-- account may send as.
CREATE TABLE mail_senders (
    id         {{.ID}},
    account_id BIGINT NOT NULL REFERENCES quota_accounts (id),
    pattern    TEXT NOT NULL,
    created_at {{.Time}} NOT NULL,
    UNIQUE (account_id, pattern)
);
--bun:split
-- One row per accepted submission: a single message (content stored as
-- sent) or a personalised batch (content stored as templates; each
-- recipient row carries its data).
CREATE TABLE mail_messages (
    id              TEXT PRIMARY KEY,
    account_id      BIGINT NOT NULL REFERENCES quota_accounts (id),
    origin          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('single', 'batch')),
    priority        SMALLINT NOT NULL,
    campaign        TEXT NOT NULL DEFAULT '',
    from_addr       TEXT NOT NULL,
    from_name       TEXT NOT NULL DEFAULT '',
    reply_to        TEXT NOT NULL DEFAULT '',
    subject         TEXT NOT NULL DEFAULT '',
    text_body       TEXT,
    html_body       TEXT,
    headers         TEXT NOT NULL DEFAULT '[]',
    idempotency_key TEXT,
    send_at         {{.Time}},
    accepted_at     {{.Time}} NOT NULL,
    recipients      INTEGER NOT NULL DEFAULT 0,
    cancelled_at    {{.Time}},
    UNIQUE (account_id, idempotency_key)
);
--bun:split
CREATE INDEX mail_messages_account_idx ON mail_messages (account_id, accepted_at);
--bun:split
CREATE INDEX mail_messages_campaign_idx ON mail_messages (campaign, accepted_at) WHERE campaign <> '';
--bun:split
CREATE TABLE mail_tags (
    message_id TEXT NOT NULL REFERENCES mail_messages (id),
    tag        TEXT NOT NULL,
    PRIMARY KEY (message_id, tag)
);
--bun:split
CREATE INDEX mail_tags_tag_idx ON mail_tags (tag, message_id);
--bun:split
CREATE TABLE mail_attachments (
    message_id   TEXT NOT NULL REFERENCES mail_messages (id),
    seq          INTEGER NOT NULL,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content_id   TEXT NOT NULL DEFAULT '',
    data         {{.Blob}} NOT NULL,
    PRIMARY KEY (message_id, seq)
);
--bun:split
-- One row per recipient: the queue (status, priority, due_at) and the log.
-- priority: 0 transactional, 1 bulk; due_at: when it may next be tried.
-- message_id has no foreign key on purpose: rows are only ever inserted in
-- the transaction that holds their message, and a per-row key check would
-- take a share lock on the message row a million times for a big batch.
CREATE TABLE mail_recipients (
    id              {{.ID}},
    message_id      TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    account_id      BIGINT NOT NULL,
    origin          TEXT NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'to',
    address         TEXT NOT NULL,
    name            TEXT NOT NULL DEFAULT '',
    data            TEXT,
    rfc_message_id  TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'scheduled', 'sending', 'deferred', 'sent', 'bounced', 'failed', 'suppressed', 'cancelled')),
    priority        SMALLINT NOT NULL,
    due_at          {{.Time}} NOT NULL,
    accepted_at     {{.Time}} NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at {{.Time}},
    final_at        {{.Time}},
    remote_host     TEXT NOT NULL DEFAULT '',
    reply           TEXT NOT NULL DEFAULT '',
    UNIQUE (message_id, seq)
);
--bun:split
-- The queue: only rows still to deliver are indexed, so it stays small
-- however long the log grows.
CREATE INDEX mail_recipients_due_idx ON mail_recipients (priority, due_at)
    WHERE status IN ('queued', 'scheduled', 'deferred');
--bun:split
CREATE INDEX mail_recipients_address_idx ON mail_recipients (address, id);
--bun:split
CREATE INDEX mail_recipients_account_idx ON mail_recipients (account_id, accepted_at);
