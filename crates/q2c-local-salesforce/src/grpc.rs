//! The Pub/Sub API service: authentication of every call, the unary RPCs,
//! and the errors in Salesforce's shape (a gRPC status whose trailers carry
//! `error-code` and `rpc-id`).

use std::sync::Arc;

use q2c_pubsub::{
    Error as PublishError, ErrorCode, FetchRequest, FetchResponse, ManagedFetchRequest,
    ManagedFetchResponse, PublishRequest, PublishResponse, PublishResult, SchemaInfo,
    SchemaRequest, TopicInfo, TopicRequest, pub_sub_server::PubSub,
};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code, Request, Response, Status, Streaming,
    metadata::{MetadataMap, MetadataValue},
};

use crate::{bus::encode_replay_id, server::Shared, subscription};

/// The prefix of every Pub/Sub error code.
pub const ERROR_CODE_PREFIX: &str = "sfdc.platform.eventbus.grpc.";

/// The Pub/Sub errors this server raises, each with its code and gRPC
/// status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sfdc {
    AuthError,
    Unavailable,
    ReplayIdCorrupted,
    ReplayIdValidationFailed,
    RequestedEventsInvalid,
    TopicNotFound,
    SchemaNotFound,
    Unimplemented,
}

impl Sfdc {
    /// The code after [`ERROR_CODE_PREFIX`].
    fn code(self) -> &'static str {
        match self {
            Self::AuthError => "service.auth.error",
            Self::Unavailable => "service.unavailable",
            Self::ReplayIdCorrupted => "subscription.fetch.replayid.corrupted",
            Self::ReplayIdValidationFailed => "subscription.fetch.replayid.validation.failed",
            Self::RequestedEventsInvalid => "fetch.requested.events.invalid",
            Self::TopicNotFound => "topic.not.found",
            Self::SchemaNotFound => "schema.not.found",
            Self::Unimplemented => "rpc.not.implemented",
        }
    }

    fn grpc(self) -> Code {
        match self {
            Self::AuthError => Code::Unauthenticated,
            Self::Unavailable => Code::Unavailable,
            Self::ReplayIdCorrupted
            | Self::ReplayIdValidationFailed
            | Self::RequestedEventsInvalid => Code::InvalidArgument,
            Self::TopicNotFound | Self::SchemaNotFound => Code::NotFound,
            Self::Unimplemented => Code::Unimplemented,
        }
    }

    /// The status a client receives, with its trailers.
    pub fn status(self, message: impl Into<String>, rpc_id: &str) -> Status {
        let mut metadata = MetadataMap::new();
        let code = format!("{ERROR_CODE_PREFIX}{}", self.code());
        if let Ok(value) = MetadataValue::try_from(code) {
            metadata.insert("error-code", value);
        }
        if let Ok(value) = MetadataValue::try_from(rpc_id) {
            metadata.insert("rpc-id", value);
        }
        Status::with_metadata(self.grpc(), message, metadata)
    }
}

/// A fresh id for one RPC, as Salesforce gives each call.
pub(crate) fn new_rpc_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Shared {
    /// Checks the metadata every RPC carries: a token this server issued
    /// that has not expired, this org's instance URL and its id. Answers
    /// when the token expires.
    pub(crate) fn authorize(
        &self,
        metadata: &MetadataMap,
        rpc_id: &str,
    ) -> Result<Instant, Status> {
        let get = |key: &str| {
            metadata
                .get(key)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
        };
        let Some(valid_until) = self.tokens.valid_until(get("accesstoken")) else {
            return Err(Sfdc::AuthError.status(
                "the accesstoken is missing, was not issued by this org, or has expired",
                rpc_id,
            ));
        };
        if get("instanceurl").trim_end_matches('/') != self.instance_url {
            return Err(Sfdc::AuthError
                .status(format!("instanceurl must be {}", self.instance_url), rpc_id));
        }
        if get("tenantid") != self.org_id {
            return Err(Sfdc::AuthError.status("tenantid must be the org id", rpc_id));
        }
        Ok(valid_until)
    }
}

/// The `eventbus.v1.PubSub` service.
pub(crate) struct Service {
    pub shared: Arc<Shared>,
}

/// How a streaming response is handed to tonic: items come from a task.
type Outbound<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl PubSub for Service {
    async fn get_topic(
        &self,
        request: Request<TopicRequest>,
    ) -> Result<Response<TopicInfo>, Status> {
        let rpc_id = new_rpc_id();
        self.shared.authorize(request.metadata(), &rpc_id)?;
        let name = request.into_inner().topic_name;
        let topic = self.shared.topic(&name).ok_or_else(|| {
            Sfdc::TopicNotFound.status(format!("no topic {name:?} in this org"), &rpc_id)
        })?;
        Ok(Response::new(TopicInfo {
            topic_name: topic.def.topic.clone(),
            tenant_guid: self.shared.org_id.clone(),
            can_publish: true,
            can_subscribe: true,
            schema_id: topic.def.schema_id.clone(),
            rpc_id,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<SchemaRequest>,
    ) -> Result<Response<SchemaInfo>, Status> {
        let rpc_id = new_rpc_id();
        self.shared.authorize(request.metadata(), &rpc_id)?;
        let schema_id = request.into_inner().schema_id;
        let topic = self
            .shared
            .topics
            .iter()
            .find(|topic| topic.def.schema_id == schema_id)
            .ok_or_else(|| {
                Sfdc::SchemaNotFound.status(format!("no schema with id {schema_id:?}"), &rpc_id)
            })?;
        Ok(Response::new(SchemaInfo {
            schema_json: topic.def.schema_json.to_owned(),
            schema_id,
            rpc_id,
        }))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let rpc_id = new_rpc_id();
        self.shared.authorize(request.metadata(), &rpc_id)?;
        let request = request.into_inner();
        let topic = self.shared.topic(&request.topic_name).ok_or_else(|| {
            Sfdc::TopicNotFound.status(
                format!("no topic {:?} in this org", request.topic_name),
                &rpc_id,
            )
        })?;

        // Each event is checked alone; valid ones are published in order
        // and the invalid ones answered with an error in their place.
        let mut results = Vec::with_capacity(request.events.len());
        let mut valid = Vec::new();
        for mut event in request.events {
            if event.id.is_empty() {
                event.id = uuid::Uuid::new_v4().to_string();
            }
            let problem = if event.schema_id == topic.def.schema_id {
                topic.def.check_payload(&event.payload).err()
            } else {
                Some(format!(
                    "schema id {:?} is not the schema of {} ({})",
                    event.schema_id, topic.def.topic, topic.def.schema_id
                ))
            };
            results.push(PublishResult {
                replay_id: Vec::new(),
                error: problem.as_ref().map(|msg| PublishError {
                    code: ErrorCode::Publish.into(),
                    msg: msg.clone(),
                }),
                correlation_key: event.id.clone(),
            });
            if problem.is_none() {
                valid.push(event);
            }
        }
        let mut replay_ids = topic.append(valid).into_iter();
        for result in results.iter_mut().filter(|r| r.error.is_none()) {
            if let Some(replay) = replay_ids.next() {
                result.replay_id = encode_replay_id(replay);
            }
        }
        Ok(Response::new(PublishResponse {
            results,
            schema_id: topic.def.schema_id.clone(),
            rpc_id,
        }))
    }

    type SubscribeStream = Outbound<FetchResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FetchRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.shared.count_subscribe_call();
        let rpc_id = new_rpc_id();
        let token_valid_until = self.shared.authorize(request.metadata(), &rpc_id)?;
        let token = request
            .metadata()
            .get("accesstoken")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(subscription::run(
            Arc::clone(&self.shared),
            subscription::Caller {
                token,
                token_valid_until,
                rpc_id,
            },
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type PublishStreamStream = Outbound<PublishResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let rpc_id = new_rpc_id();
        self.shared.authorize(request.metadata(), &rpc_id)?;
        Err(Sfdc::Unimplemented.status(
            "PublishStream is not offered by the local Salesforce: use Publish",
            &rpc_id,
        ))
    }

    type ManagedSubscribeStream = Outbound<ManagedFetchResponse>;

    async fn managed_subscribe(
        &self,
        request: Request<Streaming<ManagedFetchRequest>>,
    ) -> Result<Response<Self::ManagedSubscribeStream>, Status> {
        let rpc_id = new_rpc_id();
        self.shared.authorize(request.metadata(), &rpc_id)?;
        Err(Sfdc::Unimplemented.status(
            "ManagedSubscribe is not offered by the local Salesforce: use Subscribe",
            &rpc_id,
        ))
    }
}
