-- Package mailing: the delivery engine promotes the scheduled recipients
-- whose time has come before every claim (Mailer.PromoteDue). With no index
-- of its own that statement scanned the queue: with a campaign of a million
-- bulk recipients queued on PostgreSQL it took up to half a second per
-- claim round. Only scheduled rows are indexed, so the index is empty
-- whenever nothing is scheduled.

CREATE INDEX mail_recipients_scheduled_idx ON mail_recipients (due_at) WHERE status = 'scheduled';
