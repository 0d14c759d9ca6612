//! The project's `.proto` against the Pub/Sub contract in the shared
//! reference (`shared/reference/salesforce.md`): every message's field
//! names, numbers and types, every RPC's streaming and types, and every
//! enum value must match, or real Salesforce would not understand q2c.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{FieldDescriptorProto, FileDescriptorProto};

fn reference() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/salesforce.md");
    std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "the shared reference is expected beside the repository at {}: {error}",
            path.display()
        )
    })
}

fn proto() -> FileDescriptorProto {
    let set = protox::compile(["eventbus/v1/pubsub_api.proto"], [q2c_pubsub::PROTO_DIR])
        .expect("the .proto compiles");
    set.file
        .into_iter()
        .find(|file| file.name() == "eventbus/v1/pubsub_api.proto")
        .expect("the file is in the set")
}

/// Rows of the Markdown table whose header starts with `first_column`.
fn table_rows<'a>(text: &'a str, first_column: &str) -> Vec<Vec<&'a str>> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !line.trim_start().starts_with('|') {
            inside = false;
            continue;
        }
        if cells.first() == Some(&first_column) {
            inside = true;
            continue;
        }
        if inside
            && !cells
                .iter()
                .all(|cell| cell.chars().all(|c| c == '-' || c == ':'))
        {
            rows.push(cells);
        }
    }
    rows
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

#[test]
fn every_message_matches_the_reference_field_for_field() {
    let reference = reference();
    let expected: BTreeMap<String, String> = table_rows(&reference, "message")
        .into_iter()
        .map(|row| (row[0].to_owned(), row[1].replace(' ', "").to_owned()))
        .collect();
    assert!(
        expected.len() == 17,
        "the reference lists the messages: {expected:?}"
    );

    let file = proto();
    let actual: BTreeMap<String, String> = file
        .message_type
        .iter()
        .map(|message| {
            let fields: Vec<String> = message
                .field
                .iter()
                .map(|field| format!("{}={}:{}", field.name(), field.number(), short_type(field)))
                .collect();
            (message.name().to_owned(), fields.join(",").replace(' ', ""))
        })
        .collect();
    assert_eq!(actual, expected);
    assert_eq!(file.package(), "eventbus.v1");
}

#[test]
fn every_rpc_matches_the_reference() {
    let reference = reference();
    let expected: BTreeMap<String, (String, String)> = table_rows(&reference, "RPC")
        .into_iter()
        .map(|row| {
            // "ManagedSubscribe (beta)" names the RPC ManagedSubscribe.
            let name = row[0].split(" (").next().unwrap_or_default();
            (name.to_owned(), (row[1].to_owned(), row[2].to_owned()))
        })
        .collect();
    let file = proto();
    let service = file
        .service
        .iter()
        .find(|service| service.name() == "PubSub")
        .expect("service PubSub");
    let name = |type_name: &str, streaming: bool| {
        let short = type_name.rsplit('.').next().unwrap_or_default();
        if streaming {
            format!("stream {short}")
        } else {
            short.to_owned()
        }
    };
    let actual: BTreeMap<String, (String, String)> = service
        .method
        .iter()
        .map(|method| {
            (
                method.name().to_owned(),
                (
                    name(method.input_type(), method.client_streaming()),
                    name(method.output_type(), method.server_streaming()),
                ),
            )
        })
        .collect();
    assert_eq!(actual, expected);
}

#[test]
fn every_enum_matches_the_reference() {
    let reference = reference();
    let line = reference
        .lines()
        .find(|line| line.starts_with("Enums:"))
        .expect("the reference lists the enums");
    let file = proto();
    for enumeration in &file.enum_type {
        let values: Vec<String> = enumeration
            .value
            .iter()
            .map(|value| format!("{}={}", value.name(), value.number()))
            .collect();
        let written = format!("`{} {{ {} }}`", enumeration.name(), values.join(", "));
        assert!(line.contains(&written), "{written} is not in: {line}");
    }
    assert_eq!(file.enum_type.len(), 2);
}

#[test]
fn the_comparison_notices_a_wrong_field_number() {
    // Guards the test above: a field renumbered in a copy of the .proto must
    // show up as a difference.
    let source = std::fs::read_to_string(format!(
        "{}/eventbus/v1/pubsub_api.proto",
        q2c_pubsub::PROTO_DIR
    ))
    .unwrap();
    let broken = source.replace("int32 num_requested = 4;", "int32 num_requested = 6;");
    assert_ne!(source, broken);
    let directory = std::env::temp_dir().join(format!("q2c-proto-{}", std::process::id()));
    std::fs::create_dir_all(directory.join("eventbus/v1")).unwrap();
    std::fs::write(directory.join("eventbus/v1/pubsub_api.proto"), broken).unwrap();
    let set = protox::compile(["eventbus/v1/pubsub_api.proto"], [&directory]).unwrap();
    let fetch = set.file[0]
        .message_type
        .iter()
        .find(|message| message.name() == "FetchRequest")
        .unwrap();
    let numbers: Vec<i32> = fetch
        .field
        .iter()
        .map(FieldDescriptorProto::number)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 6, 5]);
    std::fs::remove_dir_all(directory).unwrap();
}
