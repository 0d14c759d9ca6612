-- A dry run of a bulk resume with a new input, or of a bulk skip, marks the
-- workflows whose halted step may have taken effect (an attempt went
-- unanswered): for those the job must say what became of that attempt
-- (`earlier`), or the saga refuses them one by one.
ALTER TABLE bulk_job_items
    ADD COLUMN needs_earlier boolean NOT NULL DEFAULT false;
