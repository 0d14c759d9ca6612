-- Operators repair stuck quotes: pausing, terminating, the audit trail of
-- every operator action, and idempotent action requests.

-- Paused workflows keep their commands in the outbox: the relay skips them.
ALTER TABLE workflows ADD COLUMN paused boolean NOT NULL DEFAULT false;
CREATE INDEX workflows_paused ON workflows (id) WHERE paused;

-- `terminated` is a terminal status: a terminated workflow no longer holds
-- its quote.
DROP INDEX workflows_one_live_per_quote;
CREATE UNIQUE INDEX workflows_one_live_per_quote ON workflows (quote_id)
    WHERE status NOT IN ('completed', 'compensated', 'failed', 'cancelled', 'terminated');

-- A frozen timer (its workflow is paused) keeps the time it had left in
-- `remaining` and is due at 'infinity' until it is re-armed.
ALTER TABLE timers ADD COLUMN remaining interval;

-- Every operator action, who took it and why, and what came of it.
-- Append-only: the trigger below refuses to change or remove a row.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL,
    actor         text NOT NULL,
    role          text NOT NULL,
    workflow_id   uuid NOT NULL REFERENCES workflows (id),
    action        text NOT NULL,
    reason        text NOT NULL,
    -- What the action carried besides its reason (an input patch, an output).
    input         jsonb,
    -- The workflow as the action found it and left it: status, step, phase,
    -- paused, version, outcome.
    state_before  jsonb NOT NULL,
    state_after   jsonb NOT NULL,
    -- applied | not_allowed | stale_version | invalid
    result        text NOT NULL,
    detail        text
);
CREATE INDEX audit_log_by_workflow ON audit_log (workflow_id, id);
CREATE INDEX audit_log_by_time ON audit_log (at, id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Answers to requests that carried an Idempotency-Key, per caller and
-- route, kept 24 hours: a retried request gets the first answer.
CREATE TABLE idempotent_requests (
    caller        text NOT NULL,
    route         text NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    status        smallint NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (caller, route, key)
);
CREATE INDEX idempotent_requests_by_age ON idempotent_requests (created_at);
