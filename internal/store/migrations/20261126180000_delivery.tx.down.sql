DROP TABLE IF EXISTS envios_secrets;
--bun:split
DROP INDEX IF EXISTS mail_recipients_lease_idx;
--bun:split
ALTER TABLE mail_recipients DROP COLUMN lease_owner;
--bun:split
ALTER TABLE mail_recipients DROP COLUMN lease_until;
--bun:split
DROP TABLE IF EXISTS dkim_keys;
