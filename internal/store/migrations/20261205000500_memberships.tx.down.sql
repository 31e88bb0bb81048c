CREATE INDEX contact_memberships_contact_idx ON contact_memberships (contact_id);
