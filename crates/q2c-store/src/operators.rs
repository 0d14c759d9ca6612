//! Operator actions on one workflow, and their audit trail.
//!
//! An action is one transaction: lock the workflow, check the version the
//! operator saw and whether the action is allowed where the workflow
//! stands, hand the saga the request, write what it decided, and append
//! the audit row (and, when the action changed the workflow, a line of its
//! history) — together with the answer to the request's idempotency key.
//! An action that is refused is audited too: the trail shows what people
//! tried, not only what worked.

use chrono::{DateTime, Utc};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::{Action, HistoryKind, Phase, Request, Saga};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::idempotency::{self, Earlier, Key};
use crate::outbox::Outgoing;
use crate::workflows::{Applied, Loaded, load_row, transition};
use crate::{Error, Store};

/// Who acts: a token's name and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: String,
}

/// One operator action as asked.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    /// The workflow.
    pub workflow_id: WorkflowId,
    /// The action with what it carries.
    pub request: Request,
    /// Why, in the operator's words; required.
    pub reason: String,
    /// The version the operator based the request on (`If-Match`), if any.
    pub expected_version: Option<i64>,
    /// Who.
    pub operator: Operator,
    /// The bulk job acting, if this is one of its workflows.
    pub bulk_job: Option<i64>,
}

/// Where a workflow stands, as the audit keeps it before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Its status.
    pub status: String,
    /// The step it is at, until it ends.
    pub step: Option<String>,
    /// Whether that step is performed or undone.
    pub phase: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
    /// Its version.
    pub version: i64,
    /// How the money flow ended, once it has.
    pub outcome: Option<String>,
}

impl Snapshot {
    fn of(loaded: &Loaded) -> Self {
        let saga = &loaded.saga;
        let position = saga.current_step();
        Self {
            status: saga.status().as_str().to_owned(),
            step: position.map(|(step, _)| step.to_owned()),
            phase: position.map(|(_, phase)| phase_name(phase).to_owned()),
            paused: saga.paused(),
            version: loaded.version,
            outcome: saga.outcome().map(|outcome| outcome.as_str().to_owned()),
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Step => "step",
        Phase::Compensation => "compensation",
    }
}

/// What an action came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The workflow took the action.
    Applied {
        /// As the action found it.
        before: Snapshot,
        /// As it left it.
        after: Snapshot,
        /// The action ended the workflow, for the first time.
        finished: bool,
    },
    /// The action is not one the workflow takes where it stands.
    NotAllowed {
        /// Where it stands.
        current: Snapshot,
        /// What it would take.
        allowed: Vec<Action>,
    },
    /// The operator saw an older version.
    StaleVersion {
        /// Where it stands now.
        current: Snapshot,
        /// The version the operator sent.
        expected: i64,
    },
    /// The action is allowed but what it carries is not usable (an output
    /// that does not match the definition, say).
    Invalid {
        /// Where it stands.
        current: Snapshot,
        /// The saga's words.
        reason: String,
    },
    /// No workflow has the id.
    UnknownWorkflow,
}

impl Outcome {
    /// The result's name in the audit trail.
    pub fn result_name(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::NotAllowed { .. } => "not_allowed",
            Self::StaleVersion { .. } => "stale_version",
            Self::Invalid { .. } => "invalid",
            Self::UnknownWorkflow => "unknown_workflow",
        }
    }
}

/// The answer to an action request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Acted on (or refused) now; `status` and `body` are what `render`
    /// made of the outcome, and what a retry with the same key will get.
    Now {
        /// What came of it.
        outcome: Box<Outcome>,
        /// The status to answer with.
        status: u16,
        /// The body to answer with.
        body: Value,
    },
    /// A retry of a request answered before: its first answer.
    Replayed {
        /// The first answer's status.
        status: u16,
        /// The first answer's body.
        body: Value,
    },
    /// The idempotency key was used for a different request.
    KeyReused,
}

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct AuditEntry {
    /// Its position in the trail.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The token's name.
    pub actor: String,
    /// The token's role.
    pub role: String,
    /// The workflow, for an action on one.
    pub workflow_id: Option<Uuid>,
    /// The bulk job the action belongs to, if any.
    pub bulk_job_id: Option<i64>,
    /// The dead letter, for an action on one.
    pub dead_letter_id: Option<i64>,
    /// The action.
    pub action: String,
    /// Why.
    pub reason: String,
    /// What the action carried besides its reason.
    pub input: Option<Value>,
    /// The workflow (or dead letter) as the action found it.
    pub state_before: Option<Value>,
    /// The workflow (or dead letter) as the action left it.
    pub state_after: Option<Value>,
    /// applied, not_allowed, stale_version or invalid.
    pub result: String,
    /// The refusal's words, if refused.
    pub detail: Option<String>,
}

/// Which audit rows to read; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this workflow's.
    pub workflow_id: Option<Uuid>,
    /// Only this token's.
    pub actor: Option<String>,
    /// Only from this time on.
    pub since: Option<DateTime<Utc>>,
    /// Only before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only rows after this one (for paging).
    pub after_id: Option<i64>,
}

impl Store {
    /// Takes an operator action in one transaction. `render` turns the
    /// outcome into the answer (status and body) that is stored for the
    /// idempotency key, if one came with the request.
    pub async fn act(
        &self,
        action: &ActionRequest,
        key: Option<&Key>,
        render: impl FnOnce(&Outcome) -> (u16, Value),
        now: DateTime<Utc>,
    ) -> Result<Answer, Error> {
        let mut tx = self.pool().begin().await?;
        if let Some(key) = key {
            match idempotency::look_up(&mut tx, key, now).await? {
                Earlier::Unused => {}
                Earlier::Answered { status, body } => return Ok(Answer::Replayed { status, body }),
                Earlier::OtherRequest => return Ok(Answer::KeyReused),
            }
        }
        let mut out = self.handoff().outgoing(now);
        let outcome = act_in(&mut tx, &mut out, action, now).await?;
        let (status, body) = render(&outcome);
        if let Some(key) = key {
            idempotency::remember(&mut tx, key, status, &body, now).await?;
        }
        tx.commit().await?;
        self.handoff().hand_over(out);
        Ok(Answer::Now {
            outcome: Box::new(outcome),
            status,
            body,
        })
    }

    /// The audit trail, oldest first, at most `limit` rows.
    pub async fn audit(&self, filter: &AuditFilter, limit: i64) -> Result<Vec<AuditEntry>, Error> {
        let rows = sqlx::query_as(
            "SELECT id, at, actor, role, workflow_id, bulk_job_id, dead_letter_id, action, reason, \
             input, state_before, state_after, result, detail FROM audit_log \
             WHERE ($1::uuid IS NULL OR workflow_id = $1) AND ($2::text IS NULL OR actor = $2) \
             AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4) \
             AND ($5::bigint IS NULL OR id > $5) \
             ORDER BY id LIMIT $6",
        )
        .bind(filter.workflow_id)
        .bind(filter.actor.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

pub(crate) async fn act_in(
    tx: &mut Transaction<'_, Postgres>,
    out: &mut Outgoing,
    action: &ActionRequest,
    now: DateTime<Utc>,
) -> Result<Outcome, Error> {
    let Some(mut loaded) = load_row(tx, action.workflow_id, true).await? else {
        return Ok(Outcome::UnknownWorkflow);
    };
    let before = Snapshot::of(&loaded);
    let outcome = if let Some(expected) = action
        .expected_version
        .filter(|expected| *expected != loaded.version)
    {
        Outcome::StaleVersion {
            current: before.clone(),
            expected,
        }
    } else if !loaded
        .saga
        .allowed_actions()
        .contains(&action.request.action())
    {
        Outcome::NotAllowed {
            current: before.clone(),
            allowed: loaded.saga.allowed_actions(),
        }
    } else {
        let event = action.request.event();
        match transition(tx, out, action.workflow_id, &mut loaded, &event, now).await? {
            Applied::Applied { finished, .. } => Outcome::Applied {
                before: before.clone(),
                after: Snapshot::of(&loaded),
                finished,
            },
            Applied::Refused { reason } | Applied::Ignored { reason } => Outcome::Invalid {
                current: before.clone(),
                reason,
            },
            Applied::Duplicate => Outcome::Invalid {
                current: before.clone(),
                reason: "the request was already applied".to_owned(),
            },
        }
    };
    record(tx, action, &before, &outcome, &loaded.saga, now).await?;
    Ok(outcome)
}

/// Appends the audit row, and a history line when the workflow changed.
async fn record(
    tx: &mut PgConnection,
    action: &ActionRequest,
    before: &Snapshot,
    outcome: &Outcome,
    saga: &Saga,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let (after, detail) = match outcome {
        Outcome::Applied { after, .. } => (after, None),
        Outcome::NotAllowed { current, allowed } => (
            current,
            Some(format!(
                "not allowed while {}; allowed: {}",
                current.status,
                names(allowed)
            )),
        ),
        Outcome::StaleVersion { current, expected } => (
            current,
            Some(format!(
                "based on version {expected}, but the workflow is at version {}",
                current.version
            )),
        ),
        Outcome::Invalid { current, reason } => (current, Some(reason.clone())),
        Outcome::UnknownWorkflow => return Ok(()),
    };
    let operator = &action.operator;
    append_audit(
        tx,
        &AuditRow {
            at: now,
            operator,
            workflow_id: Some(*action.workflow_id.as_uuid()),
            bulk_job_id: action.bulk_job,
            dead_letter_id: None,
            action: action.request.action().as_str(),
            reason: &action.reason,
            input: carried(&action.request),
            state_before: before,
            state_after: after,
            result: outcome.result_name(),
            detail: detail.as_deref(),
        },
    )
    .await?;
    if matches!(outcome, Outcome::Applied { .. }) {
        let step = saga
            .current_step()
            .map(|(step, _)| step.to_owned())
            .or_else(|| before.step.clone());
        sqlx::query(
            "INSERT INTO workflow_history (workflow_id, at, kind, step, command, detail) \
             VALUES ($1, $2, $3, $4, NULL, $5)",
        )
        .bind(action.workflow_id.as_uuid())
        .bind(now)
        .bind(HistoryKind::OperatorAction.as_str())
        .bind(step)
        .bind(format!(
            "{} by {} ({}): {}",
            action.request.action(),
            operator.name,
            operator.role,
            action.reason
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One row to append to the audit trail: what every audited action
/// writes, whether it concerns a workflow or a dead letter.
pub(crate) struct AuditRow<'a, S: Serialize> {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub operator: &'a Operator,
    /// The workflow acted on, if any.
    pub workflow_id: Option<Uuid>,
    /// The bulk job acting, if any.
    pub bulk_job_id: Option<i64>,
    /// The dead letter acted on, if any.
    pub dead_letter_id: Option<i64>,
    /// The action's name.
    pub action: &'a str,
    /// Why, in the operator's words.
    pub reason: &'a str,
    /// What the action carried besides its reason.
    pub input: Option<Value>,
    /// The subject as the action found it.
    pub state_before: &'a S,
    /// The subject as the action left it.
    pub state_after: &'a S,
    /// What came of it (`applied`, `not_allowed`, ...).
    pub result: &'a str,
    /// The refusal's or failure's words.
    pub detail: Option<&'a str>,
}

/// Appends one row to the audit trail, in the caller's transaction, so the
/// row and the effect it records commit together or not at all.
pub(crate) async fn append_audit<S: Serialize + Sync>(
    tx: &mut PgConnection,
    row: &AuditRow<'_, S>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, role, workflow_id, action, reason, input, \
         state_before, state_after, result, detail, bulk_job_id, dead_letter_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(row.at)
    .bind(&row.operator.name)
    .bind(&row.operator.role)
    .bind(row.workflow_id)
    .bind(row.action)
    .bind(row.reason)
    .bind(&row.input)
    .bind(sqlx::types::Json(row.state_before))
    .bind(sqlx::types::Json(row.state_after))
    .bind(row.result)
    .bind(row.detail)
    .bind(row.bulk_job_id)
    .bind(row.dead_letter_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What a request carries besides its reason, as the audit shows it and a
/// bulk job keeps it: `input`, `output` and `earlier` as the API takes them.
pub(crate) fn carried(request: &Request) -> Option<Value> {
    let (mut members, earlier) = match request {
        Request::Resume {
            input_patch,
            earlier,
        } => {
            let members = input_patch
                .iter()
                .map(|patch| ("input".to_owned(), patch.clone()))
                .collect::<serde_json::Map<_, _>>();
            (members, earlier)
        }
        Request::Skip { output, earlier } => {
            let mut members = serde_json::Map::new();
            members.insert("output".to_owned(), output.clone());
            (members, earlier)
        }
        _ => return None,
    };
    if let Some(earlier) = earlier {
        members.insert("earlier".to_owned(), json!(earlier.as_str()));
    }
    (!members.is_empty()).then_some(Value::Object(members))
}

/// Action names, comma-separated.
pub fn names(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "none".to_owned();
    }
    actions
        .iter()
        .map(|action| action.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
