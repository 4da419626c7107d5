-- SQLite's 0011 rebuilds game_servers WITHOUT ROWID (one index search per
-- flushed row instead of two). A PostgreSQL table is a heap reached through
-- its primary key's index either way: nothing to change here; the file
-- keeps the two migration sequences in step.
SELECT 1;
