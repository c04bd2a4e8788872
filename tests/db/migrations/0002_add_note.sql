ALTER TABLE patients ADD COLUMN note text;
INSERT INTO migration_log (version) VALUES (2);
