DROP TABLE IF EXISTS contact_import_rejects;
--bun:split
DROP TABLE IF EXISTS contact_imports;
--bun:split
DROP TABLE IF EXISTS contact_memberships;
--bun:split
DROP TABLE IF EXISTS contact_lists;
--bun:split
DROP TABLE IF EXISTS contacts;
