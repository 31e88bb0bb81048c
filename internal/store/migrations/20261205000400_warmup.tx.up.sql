-- Warm-up plans (issue 16, delivery.WarmUp): how many recipients each
-- provider group (an MX group such as google.com, or a recipient domain)
-- was handed on each day of the plan, counted with conditional updates
-- (sent + n <= cap) by every engine sharing the database, so the daily
-- cap holds exactly and a restart does not reset it. plan_day is the
-- date (YYYY-MM-DD) in the plan's time zone.
CREATE TABLE mail_warmup (
    provider_group TEXT NOT NULL,
    plan_day       TEXT NOT NULL,
    sent           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (provider_group, plan_day)
);
