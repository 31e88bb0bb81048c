DROP INDEX IF EXISTS mail_attempts_recipient_idx;
--bun:split
DROP TABLE IF EXISTS mail_attempts;
