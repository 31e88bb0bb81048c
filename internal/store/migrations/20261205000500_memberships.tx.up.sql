-- contact_memberships loses its index by contact (issue 15): an import
-- of 1,000,000 new contacts maintained it for every row (about a third of
-- the memberships' insert), and every query on memberships names the
-- list too — a contact's memberships are those of its account's lists —
-- so the primary key (list_id, contact_id) serves them all.
DROP INDEX contact_memberships_contact_idx;
