-- Every delivery attempt of every recipient, kept permanently (DESIGN §3:
-- the time of each attempt, the remote server and its reply). The
-- recipient row keeps the latest; this table keeps them all.
CREATE TABLE mail_attempts (
    id           {{.ID}},
    recipient_id BIGINT NOT NULL,
    at           {{.Time}} NOT NULL,
    remote_host  TEXT NOT NULL DEFAULT '',
    reply        TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL
);
--bun:split
CREATE INDEX mail_attempts_recipient_idx ON mail_attempts (recipient_id, id);
