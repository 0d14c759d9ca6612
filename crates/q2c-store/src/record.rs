//! A saga record is stored in two places: the definition text once per
//! version in `workflow_definitions` (content-addressed by its hash), and
//! everything else in the workflow's `state` column. Together they are the
//! core's [`SagaRecord`], definition text included.

use q2c_core::saga::SagaRecord;
use serde_json::Value;
use uuid::Uuid;

use crate::Error;

/// The record as stored in `workflows.state`: without the definition text.
pub(crate) fn to_state(record: &SagaRecord) -> Result<Value, Error> {
    let mut value = serde_json::to_value(record).map_err(|error| Error::CorruptRecord {
        workflow_id: *record.workflow_id.as_uuid(),
        reason: error.to_string(),
    })?;
    if let Some(definition) = value.get_mut("definition").and_then(Value::as_object_mut) {
        definition.remove("source");
    }
    Ok(value)
}

/// Joins a stored state with its definition text back into a record.
pub(crate) fn from_state(
    workflow_id: Uuid,
    mut state: Value,
    source: String,
) -> Result<SagaRecord, Error> {
    let corrupt = |reason: String| Error::CorruptRecord {
        workflow_id,
        reason,
    };
    let definition = state
        .get_mut("definition")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| corrupt("it has no definition".to_owned()))?;
    definition.insert("source".to_owned(), Value::String(source));
    serde_json::from_value(state).map_err(|error| corrupt(error.to_string()))
}
