//! A saga record is stored in two places: the definition text once per
//! version in `workflow_definitions` (content-addressed by its hash), and
//! everything else in the workflow's `state` column. Together they are the
//! core's [`SagaRecord`], definition text included.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use q2c_core::definition::Definition;
use q2c_core::saga::SagaRecord;
use uuid::Uuid;

use crate::Error;

/// The record as stored in `workflows.state`: JSON text without the
/// definition text.
pub(crate) fn to_state(mut record: SagaRecord) -> Result<String, Error> {
    record.definition.source = String::new();
    serde_json::to_string(&record).map_err(|error| Error::CorruptRecord {
        workflow_id: *record.workflow_id.as_uuid(),
        reason: error.to_string(),
    })
}

/// Joins a stored state with its definition text back into a record.
pub(crate) fn from_state(
    workflow_id: Uuid,
    state: &str,
    source: String,
) -> Result<SagaRecord, Error> {
    let mut record = from_state_alone(workflow_id, state)?;
    record.definition.source = source;
    Ok(record)
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
pub(crate) fn from_state_alone(workflow_id: Uuid, state: &str) -> Result<SagaRecord, Error> {
    serde_json::from_str(state).map_err(|error| Error::CorruptRecord {
        workflow_id,
        reason: error.to_string(),
    })
}
