-- Finding workflows: by the step they are at, by how long they have been
-- there, and by any business reference a step returned.

-- The step a live workflow is at (NULL once it has ended), and since when it
-- has stood where it stands (status, step and phase).
ALTER TABLE workflows
    ADD COLUMN current_step text,
    ADD COLUMN state_since timestamptz;
UPDATE workflows SET current_step = state->'state'->>'step', state_since = updated_at;
ALTER TABLE workflows ALTER COLUMN state_since SET NOT NULL;

-- Newest first, with the id as tie-breaker: the list's order and cursor.
CREATE INDEX workflows_by_created ON workflows (created_at DESC, id DESC);
CREATE INDEX workflows_by_updated ON workflows (updated_at);
CREATE INDEX workflows_by_quote ON workflows (quote_id);
-- Live workflows only: "stuck" and the counts by status and step read these
-- and never the (much larger) set of finished ones.
CREATE INDEX workflows_live_by_state_since ON workflows (state_since)
    WHERE status NOT IN ('completed', 'compensated', 'failed', 'cancelled', 'terminated');
CREATE INDEX workflows_live_by_status_step ON workflows (status, current_step)
    WHERE status NOT IN ('completed', 'compensated', 'failed', 'cancelled', 'terminated');

-- Every text value a step returned (an ERP order number, an invoice number, a
-- payment id), so a workflow is found by any of them.
CREATE TABLE workflow_references (
    workflow_id  uuid NOT NULL REFERENCES workflows (id),
    step         text NOT NULL,
    field        text NOT NULL,
    value        text NOT NULL,
    PRIMARY KEY (workflow_id, step, field)
);
CREATE INDEX workflow_references_by_value ON workflow_references (value);

INSERT INTO workflow_references (workflow_id, step, field, value)
SELECT w.id, s->>'name', kv.key, kv.value #>> '{}'
FROM workflows w,
     jsonb_array_elements(w.state->'steps') AS s,
     jsonb_each(CASE WHEN jsonb_typeof(s->'output') = 'object' THEN s->'output' ELSE '{}'::jsonb END) AS kv
WHERE jsonb_typeof(kv.value) = 'string' AND length(kv.value #>> '{}') <= 200;
