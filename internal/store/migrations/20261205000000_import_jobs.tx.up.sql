-- Import jobs (contacts.Jobs): an import submitted over the HTTPS API is
-- recorded queued, its file kept on the disk of the node that received it
-- (file_path, on node) until the import ends; node is that node's name, and
-- only it runs the job. While it runs, read and bytes_read (of bytes_total,
-- the file's size) say how far it is (PostgreSQL; on SQLite the running
-- import holds the write lock and the progress is kept in memory).
-- column_map and dry_run are the options it runs with; cancelled_by, set,
-- asks the node running it to cancel it (a cancel received by another
-- node), and names who cancelled it.
ALTER TABLE contact_imports ADD COLUMN bytes_total BIGINT NOT NULL DEFAULT 0;
--bun:split
ALTER TABLE contact_imports ADD COLUMN bytes_read BIGINT NOT NULL DEFAULT 0;
--bun:split
ALTER TABLE contact_imports ADD COLUMN file_path TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE contact_imports ADD COLUMN node TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE contact_imports ADD COLUMN column_map TEXT NOT NULL DEFAULT '';
--bun:split
ALTER TABLE contact_imports ADD COLUMN dry_run {{.Bool}} NOT NULL DEFAULT FALSE;
--bun:split
ALTER TABLE contact_imports ADD COLUMN cancelled_by TEXT NOT NULL DEFAULT '';
--bun:split
-- An account's imports, the newest first (GET /v1/imports).
CREATE INDEX contact_imports_account_idx ON contact_imports (account_id, id);
--bun:split
-- A node's unfinished jobs (its queue, and what it recovers at start).
CREATE INDEX contact_imports_node_idx ON contact_imports (node, status);
