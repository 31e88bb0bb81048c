ALTER TABLE mail_messages DROP COLUMN raw;
--bun:split
DROP TABLE IF EXISTS relay_auth_failures;
--bun:split
DROP INDEX IF EXISTS relay_credentials_account_idx;
--bun:split
DROP TABLE IF EXISTS relay_credentials;
