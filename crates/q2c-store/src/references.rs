//! Business references: the text values steps return (an ERP order number,
//! an invoice number, a payment id), kept in their own indexed table so a
//! workflow is found by any of them without reading its record.

use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::Saga;
use serde_json::Value;
use sqlx::PgConnection;

use crate::Error;

/// Longer values are not references people search for.
const MAX_VALUE_CHARS: usize = 200;

/// The steps' outputs before an event, to tell which ones it changed.
pub(crate) fn outputs(saga: &Saga) -> Vec<Option<Value>> {
    saga.steps()
        .iter()
        .map(|step| step.output.clone())
        .collect()
}

/// One reference a transition stores.
pub(crate) struct Reference {
    step: String,
    field: String,
    value: String,
}

/// The references of every output that changed since `before`.
pub(crate) fn changes(before: &[Option<Value>], saga: &Saga) -> Vec<Reference> {
    let mut references = Vec::new();
    for (index, step) in saga.steps().iter().enumerate() {
        let Some(Value::Object(output)) = &step.output else {
            continue;
        };
        if before.get(index).and_then(Option::as_ref) == step.output.as_ref() {
            continue;
        }
        for (field, value) in output {
            let Value::String(value) = value else {
                continue;
            };
            if value.is_empty() || value.chars().count() > MAX_VALUE_CHARS {
                continue;
            }
            references.push(Reference {
                step: step.name.clone(),
                field: field.clone(),
                value: value.clone(),
            });
        }
    }
    references
}

/// The references as columns, for writing them with `unnest`.
pub(crate) fn columns(references: &[Reference]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let steps = references.iter().map(|r| r.step.as_str()).collect();
    let fields = references.iter().map(|r| r.field.as_str()).collect();
    let values = references.iter().map(|r| r.value.as_str()).collect();
    (steps, fields, values)
}

/// Stores `references`, replacing what a step stored before.
pub(crate) async fn write(
    tx: &mut PgConnection,
    workflow_id: WorkflowId,
    references: &[Reference],
) -> Result<(), Error> {
    if references.is_empty() {
        return Ok(());
    }
    let (steps, fields, values) = columns(references);
    sqlx::query(
        "INSERT INTO workflow_references (workflow_id, step, field, value) \
         SELECT $1, step, field, value FROM unnest($2::text[], $3::text[], $4::text[]) \
             AS r(step, field, value) \
         ON CONFLICT (workflow_id, step, field) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(workflow_id.as_uuid())
    .bind(steps)
    .bind(fields)
    .bind(values)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
