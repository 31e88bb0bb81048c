DROP TABLE IF EXISTS mail_counters;
--bun:split
DROP INDEX IF EXISTS mail_events_account_idx;
--bun:split
DROP INDEX IF EXISTS mail_events_recipient_idx;
--bun:split
DROP TABLE IF EXISTS mail_events;
