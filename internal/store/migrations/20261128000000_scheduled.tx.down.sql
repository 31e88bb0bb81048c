DROP INDEX IF EXISTS mail_recipients_scheduled_idx;
