-- Bearer tokens of the HTTPS API: an account's (account_id set) or an
-- admin's (NULL). Only the SHA-256 of a token is kept: tokens are 256-bit
-- random strings, so a fast hash is enough, and the lookup is by it.
CREATE TABLE api_tokens (
    id         {{.ID}},
    account_id BIGINT REFERENCES quota_accounts (id),
    name       TEXT NOT NULL DEFAULT '',
    hash       TEXT NOT NULL UNIQUE,
    created_at {{.Time}} NOT NULL,
    revoked_at {{.Time}}
);
