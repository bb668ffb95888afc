-- A dead letter replayed successfully is kept, marked, for the record; the replay's effect is in
-- the same transaction as the mark, so a dead letter is applied at most once by a replay.
ALTER TABLE messaging.dead_letters ADD COLUMN replayed_at TIMESTAMPTZ;
