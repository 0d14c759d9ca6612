-- Where q2c stands in each Salesforce event stream. The replay id is opaque
-- bytes, stored as Salesforce sent them. A preset instead of an id says where
-- the next subscription starts (an operator's move, or the first start).
CREATE TABLE salesforce_positions (
    topic       text PRIMARY KEY,
    replay_id   bytea,
    preset      text CHECK (preset IN ('EARLIEST', 'LATEST')),
    updated_at  timestamptz NOT NULL,
    CHECK ((replay_id IS NULL) <> (preset IS NULL))
);

-- Every move an operator makes, never rewritten.
CREATE TABLE salesforce_position_moves (
    id              bigserial PRIMARY KEY,
    topic           text NOT NULL,
    from_replay_id  bytea,
    from_preset     text,
    to_replay_id    bytea,
    to_preset       text,
    moved_by        text NOT NULL,
    moved_at        timestamptz NOT NULL
);
CREATE INDEX salesforce_position_moves_by_topic ON salesforce_position_moves (topic, id);
