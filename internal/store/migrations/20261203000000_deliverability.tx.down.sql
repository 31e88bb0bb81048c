ALTER TABLE mail_recipients DROP COLUMN suppressed_by;
--bun:split
{{if .Postgres -}}
ALTER TABLE mail_events DROP COLUMN detail;
--bun:split
ALTER TABLE mail_events DROP COLUMN class;
--bun:split
ALTER TABLE mail_events DROP CONSTRAINT mail_events_type_check;
--bun:split
ALTER TABLE mail_events ADD CONSTRAINT mail_events_type_check
    CHECK (type IN ('sent', 'deferred', 'bounced', 'failed', 'cancelled', 'suppressed'));
--bun:split
DROP TRIGGER IF EXISTS mail_suppressions_no_delete ON mail_suppressions;
--bun:split
DROP FUNCTION IF EXISTS envios_no_delete();
{{- else -}}
ALTER TABLE mail_events DROP COLUMN detail;
--bun:split
ALTER TABLE mail_events DROP COLUMN class;
--bun:split
DROP TRIGGER IF EXISTS mail_suppressions_no_delete;
{{- end}}
--bun:split
DROP INDEX IF EXISTS mail_inbound_recipient_idx;
--bun:split
DROP TABLE IF EXISTS mail_inbound;
--bun:split
DROP TABLE IF EXISTS mail_failure_streaks;
--bun:split
DROP INDEX IF EXISTS mail_suppressions_created_idx;
--bun:split
DROP INDEX IF EXISTS mail_suppressions_address_idx;
--bun:split
DROP TABLE IF EXISTS mail_suppressions;
