-- Every platform event q2c has admitted, by its Salesforce event id, with the
-- answer it got: a repeated event gets the same answer and starts nothing.
CREATE TABLE intake_events (
    event_uuid    text PRIMARY KEY,
    channel       text NOT NULL,
    replay_id     bigint,
    quote_id      text NOT NULL,
    workflow_id   uuid REFERENCES workflows (id),
    outcome       text NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE INDEX intake_events_by_quote ON intake_events (quote_id);
