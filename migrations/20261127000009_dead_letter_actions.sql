-- Operators replay or discard dead letters through the admin API. A letter
-- is never deleted: replaying and discarding mark it, and the audit trail
-- (audit_log.dead_letter_id) says who did what and why.

ALTER TABLE dead_letters
    -- The last replay that the broker confirmed and routed, and by whom;
    -- cleared when the replayed message is dead-lettered again, so the
    -- letter is open once more (the audit trail keeps every replay).
    ADD COLUMN replayed_at     timestamptz,
    ADD COLUMN replayed_by     text,
    -- Every confirmed replay counts, also those after the letter came back.
    ADD COLUMN replay_count    integer NOT NULL DEFAULT 0,
    -- When the replayed message was last dead-lettered again.
    ADD COLUMN returned_at     timestamptz,
    ADD COLUMN discarded_at    timestamptz,
    ADD COLUMN discarded_by    text,
    ADD COLUMN discard_reason  text,
    ADD CONSTRAINT dead_letters_discard_is_whole CHECK (
        (discarded_at IS NULL) = (discarded_by IS NULL)
        AND (discarded_at IS NULL) = (discard_reason IS NULL)
    );

-- The list's default: open letters (neither replayed nor discarded),
-- newest first; and the same by message type (the routing key).
CREATE INDEX dead_letters_open ON dead_letters (id)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;
CREATE INDEX dead_letters_open_by_type ON dead_letters (routing_key, id)
    WHERE replayed_at IS NULL AND discarded_at IS NULL;

-- A letter's history is its audit rows.
CREATE INDEX audit_log_by_dead_letter ON audit_log (dead_letter_id, id)
    WHERE dead_letter_id IS NOT NULL;
