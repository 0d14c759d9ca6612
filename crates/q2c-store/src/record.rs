//! A saga record is stored in two places: the definition text once per
//! version in `workflow_definitions` (content-addressed by its hash), and
//! everything else in the workflow's `state` column. Together they are the
//! core's [`SagaRecord`], definition text included.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use q2c_core::definition::Definition;
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

/// Definitions parsed in this process, by hash. Content-addressed, so an
/// entry is right for every database and every workflow that names its
/// hash; a transition looks its definition up here instead of reading and
/// parsing the text again.
static PARSED: LazyLock<RwLock<HashMap<String, Arc<Definition>>>> = LazyLock::new(Default::default);

/// The parsed definition of `hash`, if this process has seen it.
pub(crate) fn parsed(hash: &str) -> Option<Arc<Definition>> {
    PARSED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(hash)
        .cloned()
}

/// Remembers a definition whose text was checked against its hash.
pub(crate) fn remember(definition: &Arc<Definition>) {
    PARSED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(definition.hash().as_str().to_owned())
        .or_insert_with(|| definition.clone());
}

/// Reads a stored state without its definition text, for
/// [`q2c_core::saga::Saga::restore_with`].
pub(crate) fn from_state_alone(workflow_id: Uuid, state: Value) -> Result<SagaRecord, Error> {
    serde_json::from_value(state).map_err(|error| Error::CorruptRecord {
        workflow_id,
        reason: error.to_string(),
    })
}
