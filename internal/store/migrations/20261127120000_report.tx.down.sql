CREATE INDEX mail_recipients_address_idx ON mail_recipients (address, id);
--bun:split
DROP INDEX IF EXISTS mail_recipients_address_lower_idx;
