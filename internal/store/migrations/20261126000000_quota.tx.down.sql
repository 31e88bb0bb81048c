{{if .Postgres -}}
DROP TABLE IF EXISTS audit_log, quota_usage, quota_refs, quota_entries, quota_accounts, quota_pools;
--bun:split
DROP FUNCTION IF EXISTS envios_append_only();
{{- else -}}
DROP TABLE IF EXISTS audit_log;
--bun:split
DROP TABLE IF EXISTS quota_usage;
--bun:split
DROP TABLE IF EXISTS quota_refs;
--bun:split
DROP TABLE IF EXISTS quota_entries;
--bun:split
DROP TABLE IF EXISTS quota_accounts;
--bun:split
DROP TABLE IF EXISTS quota_pools;
{{- end}}
