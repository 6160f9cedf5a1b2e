-- write_journal: insert or replace recovery journal rows (table `journal_rows`, the journal's columns by name).
INSERT OR REPLACE INTO recovery_journal BY NAME SELECT * FROM journal_rows;
