DROP INDEX mail_messages_paused_idx;
--bun:split
ALTER TABLE mail_messages DROP COLUMN paused_at;
--bun:split
DROP TABLE campaign_targets;
--bun:split
DROP TABLE campaigns;
--bun:split
DROP TABLE campaign_templates;
