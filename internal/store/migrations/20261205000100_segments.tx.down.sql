DROP TABLE IF EXISTS contact_segments;
