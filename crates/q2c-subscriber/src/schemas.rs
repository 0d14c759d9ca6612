//! Writer schemas by id, fetched once with `GetSchema`: a changed event
//! definition arrives with a new id and is fetched then.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use q2c_pubsub::SchemaRequest;
use q2c_pubsub::pub_sub_client::PubSubClient;
use tonic::transport::Channel;

use crate::connection::authorised;
use q2c_salesforce_auth::Session;

/// What looking a schema up came to.
pub(crate) enum Lookup {
    /// The schema.
    Found(Arc<Schema>),
    /// Salesforce has no such schema, or serves one that does not parse:
    /// the event cannot be read, ever.
    Unusable(String),
    /// The call failed: try again later.
    Failed(tonic::Status),
}

/// One subscription's cache.
#[derive(Default)]
pub(crate) struct Schemas {
    by_id: HashMap<String, Arc<Schema>>,
}

impl Schemas {
    pub(crate) async fn get(
        &mut self,
        client: &mut PubSubClient<Channel>,
        session: &Session,
        schema_id: &str,
    ) -> Lookup {
        if let Some(schema) = self.by_id.get(schema_id) {
            return Lookup::Found(schema.clone());
        }
        let request = match authorised(
            SchemaRequest {
                schema_id: schema_id.to_owned(),
            },
            session,
        ) {
            Ok(request) => request,
            Err(error) => return Lookup::Failed(tonic::Status::internal(error.to_string())),
        };
        match client.get_schema(request).await {
            Ok(response) => {
                match q2c_salesforce::avro::parse_schema(&response.into_inner().schema_json) {
                    Ok(schema) => {
                        let schema = Arc::new(schema);
                        self.by_id.insert(schema_id.to_owned(), schema.clone());
                        Lookup::Found(schema)
                    }
                    Err(error) => Lookup::Unusable(format!("schema {schema_id}: {error}")),
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                Lookup::Unusable(format!("Salesforce has no schema {schema_id}"))
            }
            Err(status) => Lookup::Failed(status),
        }
    }
}
