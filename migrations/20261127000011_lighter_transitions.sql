-- Every transition rewrites a workflow's state and adds rows beside it; two
-- costs of that were Postgres's own work rather than the data's:
--
-- The state was `jsonb`, so each write parsed a few kilobytes of JSON into
-- jsonb's binary form and each read printed it back out, while q2c only
-- ever stores and loads the state whole. It is kept as the JSON text q2c
-- writes (still LZ4-compressed); `state::jsonb` reads into it by hand.
--
-- The rows a transition adds (history, commands, timers, references, and
-- the intake's answer) referenced `workflows` by foreign key: a trigger and
-- a key-share lookup of the workflow for every row. Each is written by a
-- transaction that has just inserted, locked or read its workflow, and
-- workflows are never deleted, so the check could not fail; it is dropped
-- for these tables. Operators' tables (audit log, bulk job items) keep
-- theirs.
--
-- Changing the type rewrites `workflows` under an exclusive lock: with many
-- workflows stored, upgrade in a quiet hour. The compression is set in the
-- same statement, so the rewritten states are stored with LZ4 too.
DO $$
BEGIN
    ALTER TABLE workflows
        ALTER COLUMN state TYPE text USING state::text,
        ALTER COLUMN state SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'LZ4 is not available; the state keeps the default compression';
    ALTER TABLE workflows ALTER COLUMN state TYPE text USING state::text;
END
$$;

ALTER TABLE workflow_history DROP CONSTRAINT workflow_history_workflow_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_workflow_id_fkey;
ALTER TABLE timers DROP CONSTRAINT timers_workflow_id_fkey;
ALTER TABLE workflow_references DROP CONSTRAINT workflow_references_workflow_id_fkey;
ALTER TABLE intake_events DROP CONSTRAINT intake_events_workflow_id_fkey;
