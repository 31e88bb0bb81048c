-- Stored templates and campaigns (issue 15). Kept permanently: nothing
-- here is pruned or deleted by envios.
--
-- campaign_templates: subject, text and HTML templates (text/template and
-- html/template syntax) of an account, or shared by an admin (account_id
-- 0), by unique name; fields are the merge fields they use.
CREATE TABLE campaign_templates (
    id         {{.ID}},
    account_id BIGINT NOT NULL DEFAULT 0,
    name       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    text_body  TEXT,
    html_body  TEXT,
    fields     {{.JSON}} NOT NULL DEFAULT '[]',
    created_at {{.Time}} NOT NULL,
    created_by TEXT NOT NULL,
    updated_at {{.Time}} NOT NULL,
    updated_by TEXT NOT NULL,
    UNIQUE (account_id, name)
);
--bun:split
-- campaigns: what is sent (content copied from a template when saved, so
-- the record stays what was sent), to whom (lists and/or a segment), and
-- its life: draft -> scheduled -> running -> finished, paused between,
-- or cancelled. Starting it snapshots its recipients (campaign_targets)
-- and materialises them through mailing's SendBatch with the idempotency
-- key campaign:ID into message message_id; materialised_at is set once
-- every target is stored.
CREATE TABLE campaigns (
    id              {{.ID}},
    account_id      BIGINT NOT NULL REFERENCES quota_accounts (id),
    name            TEXT NOT NULL,
    from_addr       TEXT NOT NULL,
    reply_to        {{.JSON}} NOT NULL DEFAULT '[]',
    subject         TEXT NOT NULL,
    text_body       TEXT,
    html_body       TEXT,
    template_id     BIGINT,
    lists           {{.JSON}} NOT NULL DEFAULT '[]',
    segment         TEXT NOT NULL DEFAULT '',
    topic           TEXT NOT NULL DEFAULT '',
    tags            {{.JSON}} NOT NULL DEFAULT '[]',
    send_at         {{.Time}},
    status          TEXT NOT NULL CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'finished', 'cancelled')),
    message_id      TEXT NOT NULL DEFAULT '',
    targets         BIGINT NOT NULL DEFAULT 0,
    error           TEXT NOT NULL DEFAULT '',
    created_at      {{.Time}} NOT NULL,
    created_by      TEXT NOT NULL,
    updated_at      {{.Time}} NOT NULL,
    updated_by      TEXT NOT NULL,
    started_at      {{.Time}},
    started_by      TEXT NOT NULL DEFAULT '',
    materialised_at {{.Time}},
    finished_at     {{.Time}},
    cancelled_at    {{.Time}}
);
--bun:split
CREATE INDEX campaigns_account_idx ON campaigns (account_id, id);
--bun:split
CREATE INDEX campaigns_active_idx ON campaigns (status) WHERE status IN ('scheduled', 'running', 'paused');
--bun:split
-- campaign_targets: the contacts a started campaign sends to, numbered in
-- the order they are materialised (seq = the recipient's seq in the
-- campaign's message), so a restart resumes exactly where it stopped.
CREATE TABLE campaign_targets (
    campaign_id BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    contact_id  BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, seq)
);
--bun:split
-- A paused message (a paused campaign's): its recipients are not claimed
-- for delivery until it is resumed.
ALTER TABLE mail_messages ADD COLUMN paused_at {{.Time}};
--bun:split
CREATE INDEX mail_messages_paused_idx ON mail_messages (paused_at) WHERE paused_at IS NOT NULL;
