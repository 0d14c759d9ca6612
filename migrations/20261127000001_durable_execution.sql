-- Durable execution: workflow instances with their history, the outbox of
-- commands to publish, the inbox of replies already applied, timers, and
-- messages that could not be processed.

-- Definitions are content-addressed: an instance names the exact text it runs
-- by hash, so editing a file never changes an instance in flight.
CREATE TABLE workflow_definitions (
    hash        text PRIMARY KEY,
    name        text NOT NULL,
    source      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workflows (
    id               uuid PRIMARY KEY,
    definition_hash  text NOT NULL REFERENCES workflow_definitions (hash),
    definition_name  text NOT NULL,
    quote_id         text NOT NULL,
    quote_number     text NOT NULL,
    account_id       text NOT NULL,
    opportunity_id   text NOT NULL,
    status           text NOT NULL,
    outcome          text,
    -- The saga record (record_version inside) without the definition text.
    state            jsonb NOT NULL,
    -- Bumped by every transition: optimistic checks and ETags.
    version          bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

-- One live workflow per quote.
CREATE UNIQUE INDEX workflows_one_live_per_quote ON workflows (quote_id)
    WHERE status NOT IN ('completed', 'compensated', 'failed', 'cancelled');
CREATE INDEX workflows_by_status ON workflows (status, updated_at);
CREATE INDEX workflows_by_quote_number ON workflows (quote_number);
CREATE INDEX workflows_by_account ON workflows (account_id);

CREATE TABLE workflow_history (
    id           bigserial PRIMARY KEY,
    workflow_id  uuid NOT NULL REFERENCES workflows (id),
    at           timestamptz NOT NULL,
    kind         text NOT NULL,
    step         text,
    command      text,
    detail       text NOT NULL
);
CREATE INDEX workflow_history_by_workflow ON workflow_history (workflow_id, id);

-- Commands waiting to be published. A relay claims rows with a lease, publishes
-- them with publisher confirms, and only then marks them sent.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    message_id    uuid NOT NULL UNIQUE,
    workflow_id   uuid NOT NULL REFERENCES workflows (id),
    message_type  text NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    lease_owner   uuid,
    lease_until   timestamptz,
    publish_attempts integer NOT NULL DEFAULT 0,
    last_error    text,
    sent_at       timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Replies already applied (or judged not to apply), by message id: a second
-- delivery of the same message changes nothing.
CREATE TABLE inbox (
    message_id   text PRIMARY KEY,
    workflow_id  uuid,
    received_at  timestamptz NOT NULL
);

-- Step timeouts, retry backoff and deadlines. A row fires once: the
-- transition it causes deletes it in the same transaction.
CREATE TABLE timers (
    workflow_id  uuid NOT NULL REFERENCES workflows (id),
    timer_key    text NOT NULL,
    timer        jsonb NOT NULL,
    due_at       timestamptz NOT NULL,
    PRIMARY KEY (workflow_id, timer_key)
);
CREATE INDEX timers_by_due ON timers (due_at);

-- Messages that could not be processed, kept whole for operators.
CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    message_id    text,
    reason        text NOT NULL,
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    headers       jsonb NOT NULL,
    body          bytea NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE INDEX dead_letters_by_time ON dead_letters (received_at);
