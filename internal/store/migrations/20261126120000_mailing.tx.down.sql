DROP TABLE IF EXISTS mail_recipients;
--bun:split
DROP TABLE IF EXISTS mail_attachments;
--bun:split
DROP TABLE IF EXISTS mail_tags;
--bun:split
DROP TABLE IF EXISTS mail_messages;
--bun:split
DROP TABLE IF EXISTS mail_senders;
