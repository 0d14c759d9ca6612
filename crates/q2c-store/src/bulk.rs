//! Bulk actions: one operator action over the workflows a filter matches,
//! as a durable job.
//!
//! A job is planned first (the dry run): the exact workflows the filter
//! matches are stored with the version each had, and that list is what the
//! operator reviews. Running the job acts on exactly that list, one
//! workflow per transaction (the action, its audit row tied to the job, and
//! the item's result together), skipping any workflow whose version moved
//! since the dry run. A process works through a running job under a lease,
//! so a job outlives the process that started it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::{Action, Earlier, Request};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::operators::{ActionRequest, Operator, Outcome, act_in};
use crate::queries::{Filter, push_filter};
use crate::workflows::load_row;
use crate::{Error, Store};

/// The channel a started job is announced on, so a runner in any process
/// takes it up at once.
pub const BULK_CHANNEL: &str = "q2c_bulk";

/// What a dry run is asked to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The action and what it carries to each workflow.
    pub request: Request,
    /// Why, for every audit row.
    pub reason: String,
    /// Which workflows.
    pub filter: Filter,
    /// The filter as the operator wrote it, kept for people.
    pub filter_as_asked: Value,
    /// Who plans it.
    pub operator: Operator,
    /// Workflows acted on per second when it runs.
    pub rate_per_second: f64,
    /// The most workflows one job may touch.
    pub cap: i64,
}

/// What planning came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// The job exists, with exactly the workflows matched.
    Job(Box<Job>),
    /// The filter matches more workflows than one job may touch.
    TooMany {
        /// The cap.
        cap: i64,
    },
}

/// A bulk job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// The action's name.
    pub action: String,
    /// Why.
    pub reason: String,
    /// What the action carries.
    pub input: Option<Value>,
    /// The filter as asked.
    pub filter: Value,
    /// Who planned it.
    pub actor: String,
    /// Their role.
    pub role: String,
    /// planned, running, finished or cancelled.
    pub status: String,
    /// Workflows per second.
    pub rate_per_second: f64,
    /// When it was planned.
    pub created_at: DateTime<Utc>,
    /// When it was started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// The action with what it carries, as planned.
    pub fn request(&self) -> Result<Request, Error> {
        let corrupt = |reason: String| Error::CorruptJob {
            id: self.id,
            reason,
        };
        let action: Action = self
            .action
            .parse()
            .map_err(|error: q2c_core::saga::UnknownAction| corrupt(error.to_string()))?;
        let carried = |name: &str| {
            self.input
                .as_ref()
                .and_then(|input| input.get(name))
                .cloned()
        };
        let earlier = match carried("earlier") {
            None => None,
            Some(Value::String(name)) => Some(
                name.parse::<Earlier>()
                    .map_err(|error| corrupt(error.to_string()))?,
            ),
            Some(other) => return Err(corrupt(format!("`earlier` is {other}, not a name"))),
        };
        Ok(match action {
            Action::Resume => Request::Resume {
                input_patch: carried("input"),
                earlier,
            },
            Action::Skip => Request::Skip {
                output: carried("output")
                    .ok_or_else(|| corrupt("a skip without its output".to_owned()))?,
                earlier,
            },
            Action::Retry => Request::Retry,
            Action::Cancel => Request::Cancel,
            Action::Terminate => Request::Terminate,
            Action::Pause => Request::Pause,
            Action::Unpause => Request::Unpause,
        })
    }
}

/// One workflow of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Item {
    /// Its place in the job.
    pub position: i32,
    /// The workflow.
    pub workflow_id: Uuid,
    /// Its version at the dry run.
    pub version: i64,
    /// pending, applied, changed, not_allowed, invalid or gone.
    pub result: String,
    /// Why, when it was not applied.
    pub detail: Option<String>,
    /// At the dry run, its halted step may have taken effect: the job must
    /// say what became of that attempt (`earlier`).
    pub needs_earlier: bool,
    /// When it was dealt with.
    pub done_at: Option<DateTime<Utc>>,
}

/// A job with its workflows.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// The job.
    pub job: Job,
    /// Its workflows, in order.
    pub items: Vec<Item>,
}

/// What a request to move a job along came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Moved {
    /// Done.
    Done(Box<Job>),
    /// The job is not in a status that allows it.
    Refused(Box<Job>),
    /// No such job.
    Unknown,
}

/// One step of a running job.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// One workflow was dealt with.
    Acted {
        /// Which.
        item: Item,
    },
    /// Nothing was left: the job is finished.
    Finished,
    /// The job is no longer this runner's (its lease passed to another, or
    /// it was cancelled).
    NotMine,
}

const JOB_COLUMNS: &str = "id, action, reason, input, filter, actor, role, status, \
     rate_per_second, created_at, started_at, finished_at";

impl Store {
    /// The dry run: stores the job with exactly the workflows `plan`'s
    /// filter matches now (oldest first), each with its version.
    pub async fn plan_bulk(&self, plan: &Plan, now: DateTime<Utc>) -> Result<Planned, Error> {
        let mut tx = self.pool().begin().await?;
        let mut query =
            QueryBuilder::<Postgres>::new("SELECT id, version FROM workflows WHERE true");
        push_filter(&mut query, &plan.filter);
        query
            .push(" ORDER BY created_at, id LIMIT ")
            .push_bind(plan.cap.saturating_add(1));
        let matched: Vec<(Uuid, i64)> = query.build_query_as().fetch_all(&mut *tx).await?;
        if i64::try_from(matched.len()).unwrap_or(i64::MAX) > plan.cap {
            return Ok(Planned::TooMany { cap: plan.cap });
        }
        let input = crate::operators::carried(&plan.request);
        let job: Job = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bulk_jobs (action, reason, input, filter, actor, role, status, \
             rate_per_second, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'planned', $7, $8) \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(plan.request.action().as_str())
        .bind(&plan.reason)
        .bind(&input)
        .bind(&plan.filter_as_asked)
        .bind(&plan.operator.name)
        .bind(&plan.operator.role)
        .bind(plan.rate_per_second)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let positions: Vec<i32> = (1..=i32::try_from(matched.len()).unwrap_or(i32::MAX)).collect();
        let (ids, versions): (Vec<Uuid>, Vec<i64>) = matched.into_iter().unzip();
        let new_revision = matches!(
            plan.request,
            Request::Resume {
                input_patch: Some(_),
                ..
            } | Request::Skip { .. }
        );
        let mut needs_earlier = vec![false; ids.len()];
        if new_revision {
            for (id, needs) in ids.iter().zip(&mut needs_earlier) {
                let loaded = load_row(&mut tx, WorkflowId::new(*id), false).await?;
                *needs = loaded.is_some_and(|loaded| loaded.saga.needs_earlier());
            }
        }
        sqlx::query(
            "INSERT INTO bulk_job_items (job_id, position, workflow_id, version, needs_earlier) \
             SELECT $1, * FROM unnest($2::int[], $3::uuid[], $4::bigint[], $5::boolean[])",
        )
        .bind(job.id)
        .bind(&positions)
        .bind(&ids)
        .bind(&versions)
        .bind(&needs_earlier)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Planned::Job(Box::new(job)))
    }

    /// A job and its workflows.
    pub async fn bulk_job(&self, id: i64) -> Result<Option<JobView>, Error> {
        let job: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM bulk_jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(job) = job else {
            return Ok(None);
        };
        let items = sqlx::query_as(
            "SELECT position, workflow_id, version, result, detail, done_at, needs_earlier \
             FROM bulk_job_items WHERE job_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        Ok(Some(JobView { job, items }))
    }

    /// Starts a planned job; runners anywhere take it up.
    pub async fn start_bulk(&self, id: i64, now: DateTime<Utc>) -> Result<Moved, Error> {
        self.move_job(
            id,
            "status = 'running', started_at = $2",
            "status = 'planned'",
            now,
            true,
        )
        .await
    }

    /// Cancels a job that has not finished: the workflows not yet dealt
    /// with stay pending and untouched.
    pub async fn cancel_bulk(&self, id: i64, now: DateTime<Utc>) -> Result<Moved, Error> {
        self.move_job(
            id,
            "status = 'cancelled', finished_at = $2, lease_owner = NULL, lease_until = NULL",
            "status IN ('planned', 'running')",
            now,
            false,
        )
        .await
    }

    async fn move_job(
        &self,
        id: i64,
        set: &str,
        when: &str,
        now: DateTime<Utc>,
        announce: bool,
    ) -> Result<Moved, Error> {
        let mut tx = self.pool().begin().await?;
        let moved: Option<Job> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE bulk_jobs SET {set} WHERE id = $1 AND {when} RETURNING {JOB_COLUMNS}"
        )))
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let answer = match moved {
            Some(job) => {
                if announce {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(BULK_CHANNEL)
                        .execute(&mut *tx)
                        .await?;
                }
                Moved::Done(Box::new(job))
            }
            None => match self.bulk_job(id).await? {
                Some(view) => Moved::Refused(Box::new(view.job)),
                None => Moved::Unknown,
            },
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// Takes a running job whose lease is free or expired (or already
    /// `owner`'s) for `lease`.
    pub async fn claim_bulk(
        &self,
        owner: Uuid,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, Error> {
        let until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30));
        let job = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE bulk_jobs SET lease_owner = $1, lease_until = $2 WHERE id = ( \
             SELECT id FROM bulk_jobs WHERE status = 'running' \
             AND (lease_until IS NULL OR lease_until < $3 OR lease_owner = $1) \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLUMNS}"
        )))
        .bind(owner)
        .bind(until)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(job)
    }

    /// Deals with the job's next workflow in one transaction: the action
    /// if the workflow is still at the version of the dry run, its audit
    /// row, and the item's result; and renews the lease. Finishes the job
    /// when nothing is left.
    pub async fn bulk_step(
        &self,
        job: &Job,
        owner: Uuid,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Step, Error> {
        let request = job.request()?;
        let mut tx = self.pool().begin().await?;
        let until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30));
        let mine = sqlx::query(
            "UPDATE bulk_jobs SET lease_until = $3 \
             WHERE id = $1 AND status = 'running' AND lease_owner = $2",
        )
        .bind(job.id)
        .bind(owner)
        .bind(until)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if mine == 0 {
            return Ok(Step::NotMine);
        }
        let next: Option<(i32, Uuid, i64)> = sqlx::query_as(
            "SELECT position, workflow_id, version FROM bulk_job_items \
             WHERE job_id = $1 AND result = 'pending' ORDER BY position LIMIT 1 FOR UPDATE",
        )
        .bind(job.id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((position, workflow_id, version)) = next else {
            sqlx::query(
                "UPDATE bulk_jobs SET status = 'finished', finished_at = $2, \
                 lease_owner = NULL, lease_until = NULL WHERE id = $1",
            )
            .bind(job.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Step::Finished);
        };
        let action = ActionRequest {
            workflow_id: WorkflowId::new(workflow_id),
            request: request.clone(),
            reason: job.reason.clone(),
            expected_version: Some(version),
            operator: Operator {
                name: job.actor.clone(),
                role: job.role.clone(),
            },
            bulk_job: Some(job.id),
        };
        let mut out = self.handoff().outgoing(now);
        let (result, detail) = match act_in(&mut tx, &mut out, &action, now).await? {
            Outcome::Applied { .. } => ("applied", None),
            Outcome::StaleVersion { current, .. } => (
                "changed",
                Some(format!(
                    "the workflow moved from version {version} to {} since the dry run",
                    current.version
                )),
            ),
            Outcome::NotAllowed { current, .. } => (
                "not_allowed",
                Some(format!(
                    "`{}` is not allowed while {}",
                    request.action(),
                    current.status
                )),
            ),
            Outcome::Invalid { reason, .. } => ("invalid", Some(reason)),
            Outcome::UnknownWorkflow => ("gone", Some("the workflow no longer exists".into())),
        };
        let item: Item = sqlx::query_as(
            "UPDATE bulk_job_items SET result = $3, detail = $4, done_at = $5 \
             WHERE job_id = $1 AND position = $2 \
             RETURNING position, workflow_id, version, result, detail, done_at, needs_earlier",
        )
        .bind(job.id)
        .bind(position)
        .bind(result)
        .bind(&detail)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.handoff().hand_over(out);
        Ok(Step::Acted { item })
    }
}
