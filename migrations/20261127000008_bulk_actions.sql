-- Bulk actions: one operator action over many workflows, as a durable job
-- that first lists exactly what it would touch and then acts on exactly
-- that list. Dead-letter actions and bulk actions are audited like the rest.

CREATE TABLE bulk_jobs (
    id               bigserial PRIMARY KEY,
    action           text NOT NULL,
    reason           text NOT NULL,
    -- What the action carries to each workflow (an input patch, an output).
    input            jsonb,
    -- The filter as asked, for people; the items below are what it matched.
    filter           jsonb NOT NULL,
    actor            text NOT NULL,
    role             text NOT NULL,
    -- planned | running | finished | cancelled
    status           text NOT NULL,
    rate_per_second  double precision NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    -- The process working through the job, and until when it may.
    lease_owner      uuid,
    lease_until      timestamptz
);
CREATE INDEX bulk_jobs_running ON bulk_jobs (id) WHERE status = 'running';

-- The workflows a dry run matched, each with the version it had then; a run
-- acts on a workflow only if it is still at that version.
CREATE TABLE bulk_job_items (
    job_id       bigint NOT NULL REFERENCES bulk_jobs (id),
    position     integer NOT NULL,
    workflow_id  uuid NOT NULL REFERENCES workflows (id),
    version      bigint NOT NULL,
    -- pending | applied | changed | not_allowed | invalid | gone
    result       text NOT NULL DEFAULT 'pending',
    detail       text,
    done_at      timestamptz,
    PRIMARY KEY (job_id, position)
);
CREATE INDEX bulk_job_items_pending ON bulk_job_items (job_id, position)
    WHERE result = 'pending';

-- An audit row may concern a dead letter rather than a workflow, and a
-- workflow action may belong to a bulk job.
ALTER TABLE audit_log
    ALTER COLUMN workflow_id DROP NOT NULL,
    ALTER COLUMN state_before DROP NOT NULL,
    ALTER COLUMN state_after DROP NOT NULL,
    ADD COLUMN bulk_job_id bigint REFERENCES bulk_jobs (id),
    ADD COLUMN dead_letter_id bigint REFERENCES dead_letters (id);
CREATE INDEX audit_log_by_bulk_job ON audit_log (bulk_job_id, id) WHERE bulk_job_id IS NOT NULL;
