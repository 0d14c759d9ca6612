//! The project's `.proto` against its record of Salesforce's published
//! Pub/Sub contract (`tests/contract/salesforce-pubsub-api.toml`, which names
//! the official file and commit it was taken from): every message's field
//! names, numbers and types, every RPC's streaming and types, and every enum
//! value must match, or real Salesforce would not understand q2c.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{FieldDescriptorProto, FileDescriptorProto};
use serde::Deserialize;

const PROTO_FILE: &str = "eventbus/v1/pubsub_api.proto";

/// The record of Salesforce's contract, as the TOML file writes it.
#[derive(Debug, Deserialize)]
struct Contract {
    source: Source,
    api: Api,
    rpc: BTreeMap<String, Rpc>,
    message: BTreeMap<String, Vec<String>>,
    #[serde(rename = "enum")]
    enumeration: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Source {
    repository: String,
    file: String,
    commit: String,
}

#[derive(Debug, Deserialize)]
struct Api {
    package: String,
    service: String,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct Rpc {
    request: String,
    response: String,
}

fn contract() -> Contract {
    let text = include_str!("contract/salesforce-pubsub-api.toml");
    toml::from_str(text).expect("the contract record parses")
}

fn compile(directory: &Path) -> FileDescriptorProto {
    let set = protox::compile([PROTO_FILE], [directory]).expect("the .proto compiles");
    set.file
        .into_iter()
        .find(|file| file.name() == PROTO_FILE)
        .expect("the file is in the set")
}

fn proto() -> FileDescriptorProto {
    compile(Path::new(q2c_pubsub::PROTO_DIR))
}

fn short_type(field: &FieldDescriptorProto) -> String {
    let scalar = match field.r#type() {
        Type::String => Some("string"),
        Type::Bytes => Some("bytes"),
        Type::Bool => Some("bool"),
        Type::Int32 => Some("int32"),
        Type::Int64 => Some("int64"),
        _ => None,
    };
    let name = match scalar {
        Some(scalar) => scalar.to_owned(),
        None => field
            .type_name()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    if field.label() == Label::Repeated {
        format!("repeated {name}")
    } else {
        name
    }
}

/// Every message of `file` with its fields written as the record writes them.
fn messages(file: &FileDescriptorProto) -> BTreeMap<String, Vec<String>> {
    file.message_type
        .iter()
        .map(|message| {
            let fields = message
                .field
                .iter()
                .map(|field| format!("{}={}:{}", field.name(), field.number(), short_type(field)))
                .collect();
            (message.name().to_owned(), fields)
        })
        .collect()
}

#[test]
fn the_record_names_where_it_was_taken_from() {
    let source = contract().source;
    assert_eq!(source.repository, "forcedotcom/pub-sub-api");
    assert_eq!(source.file, "pubsub_api.proto");
    assert!(
        source.commit.len() == 40 && source.commit.chars().all(|c| c.is_ascii_hexdigit()),
        "the record names a full commit: {:?}",
        source.commit
    );
}

#[test]
fn every_message_matches_the_record_field_for_field() {
    let contract = contract();
    assert_eq!(contract.message.len(), 17, "{:?}", contract.message.keys());
    let file = proto();
    assert_eq!(messages(&file), contract.message);
    assert_eq!(file.package(), contract.api.package);
}

#[test]
fn every_rpc_matches_the_record() {
    let contract = contract();
    let file = proto();
    let service = file
        .service
        .iter()
        .find(|service| service.name() == contract.api.service)
        .expect("the service of the record");
    let side = |type_name: &str, streaming: bool| {
        let short = type_name.rsplit('.').next().unwrap_or_default();
        if streaming {
            format!("stream {short}")
        } else {
            short.to_owned()
        }
    };
    let actual: BTreeMap<String, Rpc> = service
        .method
        .iter()
        .map(|method| {
            let rpc = Rpc {
                request: side(method.input_type(), method.client_streaming()),
                response: side(method.output_type(), method.server_streaming()),
            };
            (method.name().to_owned(), rpc)
        })
        .collect();
    assert_eq!(actual, contract.rpc);
}

#[test]
fn every_enum_matches_the_record() {
    let contract = contract();
    let actual: BTreeMap<String, Vec<String>> = proto()
        .enum_type
        .iter()
        .map(|enumeration| {
            let values = enumeration
                .value
                .iter()
                .map(|value| format!("{}={}", value.name(), value.number()))
                .collect();
            (enumeration.name().to_owned(), values)
        })
        .collect();
    assert_eq!(actual, contract.enumeration);
}

#[test]
fn the_comparison_notices_a_wrong_field_number() {
    // Guards the message test: a field renumbered in a copy of the .proto
    // must differ from the record.
    let source =
        std::fs::read_to_string(Path::new(q2c_pubsub::PROTO_DIR).join(PROTO_FILE)).unwrap();
    let broken = source.replace("int32 num_requested = 4;", "int32 num_requested = 6;");
    assert_ne!(source, broken);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join(PROTO_FILE);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, broken).unwrap();

    let mut actual = messages(&compile(directory.path()));
    let expected = contract().message;
    assert_ne!(actual, expected);
    let fetch = actual.get_mut("FetchRequest").unwrap();
    assert_eq!(fetch[3], "num_requested=6:int32");
    fetch[3] = "num_requested=4:int32".to_owned();
    assert_eq!(actual, expected, "only the renumbered field differs");
}
