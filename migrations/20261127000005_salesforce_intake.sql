-- Platform events from Salesforce's Pub/Sub API come in through the same
-- intake as POST /api/v1/events, and each topic's position is committed in
-- the same transaction as the event's effect.

-- An admitted event is a quote's acceptance or its cancellation. `reason` is
-- the cancellation's reason as Salesforce sent it; `detail` is why an event
-- changed nothing (the saga's refusal of a cancellation, for instance).
-- Outcomes without a workflow (a cancellation before any acceptance, an
-- acceptance of a cancelled quote) store none: `workflow_id` stays NULL.
ALTER TABLE intake_events
    ADD COLUMN kind text NOT NULL DEFAULT 'accepted'
        CHECK (kind IN ('accepted', 'cancelled')),
    ADD COLUMN reason text,
    ADD COLUMN detail text;

-- Whether a quote has a recorded cancellation is asked at every acceptance.
CREATE INDEX intake_events_cancellations_by_quote ON intake_events (quote_id)
    WHERE kind = 'cancelled';

-- Bumped by every operator move. A subscriber writes its position only where
-- the epoch is still the one it started from, so a subscriber that was
-- already running never overwrites an operator's move.
ALTER TABLE salesforce_positions
    ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
