-- SQLite numbers a new row from the highest seq left. When the newest events are deleted
-- (pruned, by this evq or an older one, or by hand), the next one could land at or below the
-- dispatch cursor and never be fanned out: bring the cursor down to what is left. Only events
-- already fanned out are ever deleted, so none is fanned out twice.
CREATE TRIGGER IF NOT EXISTS evq_event_newest_deleted AFTER DELETE ON evq_event
WHEN old.seq > (SELECT coalesce(max(seq), 0) FROM evq_event)
BEGIN
    UPDATE evq_counter SET value = (SELECT coalesce(max(seq), 0) FROM evq_event)
    WHERE name = 'dispatch_cursor' AND value > (SELECT coalesce(max(seq), 0) FROM evq_event);
END
