DROP INDEX IF EXISTS contact_imports_node_idx;
--bun:split
DROP INDEX IF EXISTS contact_imports_account_idx;
--bun:split
ALTER TABLE contact_imports DROP COLUMN cancelled_by;
--bun:split
ALTER TABLE contact_imports DROP COLUMN dry_run;
--bun:split
ALTER TABLE contact_imports DROP COLUMN column_map;
--bun:split
ALTER TABLE contact_imports DROP COLUMN node;
--bun:split
ALTER TABLE contact_imports DROP COLUMN file_path;
--bun:split
ALTER TABLE contact_imports DROP COLUMN bytes_read;
--bun:split
ALTER TABLE contact_imports DROP COLUMN bytes_total;
