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

/// Stores the references of every output that changed since `before`.
pub(crate) async fn record_changes(
    tx: &mut PgConnection,
    workflow_id: WorkflowId,
    before: &[Option<Value>],
    saga: &Saga,
) -> Result<(), Error> {
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
            sqlx::query(
                "INSERT INTO workflow_references (workflow_id, step, field, value) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (workflow_id, step, field) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(workflow_id.as_uuid())
            .bind(&step.name)
            .bind(field)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}
