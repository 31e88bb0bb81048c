-- Package report: per-address lookups ignore case. Addresses are stored as
-- given (the domain lowercased by mailing.ParseAddress, the local part
-- not), so the by-address index is on lower(address); it replaces the
-- case-sensitive (address, id) index, which no query used, so each
-- recipient insert still maintains one address index. Both engines index
-- the expression; a query uses it when it says lower(address) too.

CREATE INDEX mail_recipients_address_lower_idx ON mail_recipients (lower(address), id);
--bun:split
DROP INDEX IF EXISTS mail_recipients_address_idx;
