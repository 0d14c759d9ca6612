//! The published contract against the code.
//!
//! `docs/schemas` holds a JSON Schema for the envelope and for every payload,
//! `docs/samples` a sample message for every command and reply type, and
//! `docs/message-contract.md` describes them. This test keeps the three true:
//! every sample validates and decodes; every command and reply type of every
//! shipped workflow has a schema, a sample and a mention on the page; the
//! payloads the engine builds validate against their schemas; and messages
//! that break the contract are refused by the schemas as by the code.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use jsonschema::{Registry, Validator};
use q2c_contract::topology::BROKER_DELIVERY_LIMIT;
use q2c_contract::{DOMAINS, Envelope, Failure, SCHEMA_VERSION, Topology};
use q2c_core::definition::{CommandSpec, Definition, InputContext, StepDefinition};
use q2c_core::domain::ids::{CommandId, IdempotencyKey, WorkflowId};
use q2c_core::domain::quote::fixtures;
use serde_json::{Value, json};

/// The outcomes a notification step can report.
const OUTCOMES: &[&str] = &["completed", "compensated", "failed", "cancelled"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON files of `dir` whose names end in `suffix`, by the rest of the name.
fn json_files(dir: &Path, suffix: &str) -> BTreeMap<String, Value> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(stem) = name.strip_suffix(suffix) {
            files.insert(stem.to_owned(), read_json(&path));
        }
    }
    files
}

/// The schemas, compiled against each other and nothing else, and the samples.
struct Contract {
    /// By file name without `.schema.json`: `envelope`, `failed`,
    /// `erp.create_order`, `erp.create_order.succeeded`, …
    schemas: BTreeMap<String, Value>,
    validators: BTreeMap<String, Validator>,
    /// By message type (the file name without `.json`).
    samples: BTreeMap<String, Value>,
}

static CONTRACT: LazyLock<Contract> = LazyLock::new(|| {
    let docs = repository().join("docs");
    let schemas = json_files(&docs.join("schemas"), ".schema.json");
    let mut registry = Registry::new();
    for (name, schema) in &schemas {
        let id = schema["$id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}.schema.json has no $id"));
        assert!(
            id.ends_with(&format!("/{name}.schema.json")),
            "{name}.schema.json: $id {id} does not name the file"
        );
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}.schema.json"
        );
        registry = registry.add(id, schema.clone()).unwrap();
    }
    let registry = registry
        .prepare()
        .expect("the schemas resolve among themselves");
    let validators = schemas
        .iter()
        .map(|(name, schema)| {
            let validator = jsonschema::options()
                .with_registry(&registry)
                .offline()
                .should_validate_formats(true)
                .build(schema)
                .unwrap_or_else(|e| panic!("{name}.schema.json: {e}"));
            (name.clone(), validator)
        })
        .collect();
    let samples = json_files(&docs.join("samples"), ".json");
    Contract {
        schemas,
        validators,
        samples,
    }
});

/// `docs/message-contract.md`.
fn page() -> String {
    fs::read_to_string(repository().join("docs/message-contract.md")).expect("the contract page")
}

impl Contract {
    fn validator(&self, schema: &str) -> &Validator {
        self.validators
            .get(schema)
            .unwrap_or_else(|| panic!("docs/schemas/{schema}.schema.json is missing"))
    }

    /// Every way `value` breaks `schema`; empty when it is valid.
    fn errors(&self, schema: &str, value: &Value) -> Vec<String> {
        self.validator(schema)
            .iter_errors(value)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect()
    }

    fn assert_valid(&self, schema: &str, value: &Value, what: &str) {
        let errors = self.errors(schema, value);
        assert!(
            errors.is_empty(),
            "{what} breaks {schema}.schema.json:\n{}",
            errors.join("\n")
        );
    }

    fn assert_invalid(&self, schema: &str, value: &Value, what: &str) {
        assert!(
            !self.errors(schema, value).is_empty(),
            "{schema}.schema.json accepts {what}: {value}"
        );
    }

    fn sample(&self, message_type: &str) -> &Value {
        self.samples
            .get(message_type)
            .unwrap_or_else(|| panic!("docs/samples/{message_type}.json is missing"))
    }
}

/// The schema of a message type's payload.
fn payload_schema(message_type: &str) -> &str {
    if message_type.ends_with(".failed") {
        "failed"
    } else {
        message_type
    }
}

/// Every shipped workflow definition.
fn definitions() -> Vec<Definition> {
    let dir = repository().join("workflows");
    let mut definitions = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let text = fs::read_to_string(&path).unwrap();
            let origin = path.display().to_string();
            definitions.push(Definition::parse(&origin, &text).unwrap());
        }
    }
    assert!(!definitions.is_empty(), "no workflow definitions found");
    definitions
}

/// A command a definition sends: a step's, or its compensation's.
struct Sent<'d> {
    step: &'d StepDefinition,
    spec: &'d CommandSpec,
    compensation: bool,
}

fn commands(definition: &Definition) -> Vec<Sent<'_>> {
    let mut sent = Vec::new();
    for step in definition.steps() {
        sent.push(Sent {
            step,
            spec: &step.command,
            compensation: false,
        });
        if let Some(spec) = &step.compensation {
            sent.push(Sent {
                step,
                spec,
                compensation: true,
            });
        }
    }
    sent
}

fn decode(sample: &Value) -> Envelope {
    Envelope::decode(&serde_json::to_vec(sample).unwrap()).expect("decodes")
}

fn schema_keys(schema: &Value, keyword: &str) -> BTreeSet<String> {
    match &schema[keyword] {
        Value::Object(properties) => properties.keys().cloned().collect(),
        Value::Array(names) => names
            .iter()
            .map(|name| name.as_str().unwrap().to_owned())
            .collect(),
        _ => BTreeSet::new(),
    }
}

#[test]
fn every_sample_is_a_valid_envelope_with_a_valid_payload() {
    let contract = &*CONTRACT;
    assert!(!contract.samples.is_empty());
    for (name, sample) in &contract.samples {
        let what = format!("docs/samples/{name}.json");
        assert_eq!(
            sample["type"],
            name.as_str(),
            "{what}: named after its type"
        );
        contract.assert_valid("envelope", sample, &what);
        contract.assert_valid(payload_schema(name), &sample["payload"], &what);

        let envelope = decode(sample);
        assert_eq!(envelope.message_type, *name, "{what}");
        assert_eq!(envelope.schema_version, SCHEMA_VERSION, "{what}");
        // What the code writes for it is the sample itself: no field the code
        // does not know, none it spells differently.
        let encoded: Value = serde_json::from_slice(&envelope.encode()).unwrap();
        assert_eq!(&encoded, sample, "{what}: not as the code encodes it");
    }
}

#[test]
fn every_command_and_reply_of_every_workflow_is_documented() {
    let contract = &*CONTRACT;
    let page = page();
    let mut documented = BTreeSet::from(["envelope".to_owned(), "failed".to_owned()]);
    for definition in definitions() {
        for sent in commands(&definition) {
            let spec = sent.spec;
            let types = [&spec.command_type, &spec.success_reply, &spec.failure_reply];
            for message_type in types {
                contract.validator(payload_schema(message_type));
                contract.sample(message_type);
                assert!(
                    page.contains(&format!("`{message_type}`")),
                    "docs/message-contract.md does not mention `{message_type}`"
                );
                documented.insert(message_type.clone());
            }
            assert!(
                spec.failure_reply.ends_with(".failed"),
                "{}",
                spec.failure_reply
            );
            assert!(
                !spec.success_reply.ends_with(".failed"),
                "{}",
                spec.success_reply
            );

            // The command's schema names exactly the fields the engine sends,
            // all of them required (absent step outputs are sent as null).
            let schema = &contract.schemas[&spec.command_type];
            let inputs: BTreeSet<String> = spec
                .input
                .fields()
                .iter()
                .map(|(name, _)| name.clone())
                .collect();
            let command = format!("{}.schema.json", spec.command_type);
            assert_eq!(schema_keys(schema, "properties"), inputs, "{command}");
            assert_eq!(schema_keys(schema, "required"), inputs, "{command}");

            // The success schema requires exactly the declared output; a
            // compensation's success carries none.
            let schema = &contract.schemas[&spec.success_reply];
            let outputs: BTreeSet<String> = if sent.compensation {
                BTreeSet::new()
            } else {
                sent.step
                    .output
                    .fields()
                    .iter()
                    .map(|(name, _)| name.clone())
                    .collect()
            };
            let success = format!("{}.schema.json", spec.success_reply);
            assert_eq!(schema_keys(schema, "required"), outputs, "{success}");
            assert_eq!(schema_keys(schema, "properties"), outputs, "{success}");
            assert_eq!(schema["type"], "object", "{success}");
        }
    }

    let schemas: BTreeSet<String> = contract.schemas.keys().cloned().collect();
    let expected_schemas: BTreeSet<String> = documented
        .iter()
        .filter(|name| !name.ends_with(".failed"))
        .cloned()
        .chain(["common".to_owned()])
        .collect();
    assert_eq!(
        schemas, expected_schemas,
        "schemas of unknown message types"
    );
    let samples: BTreeSet<String> = contract.samples.keys().cloned().collect();
    documented.remove("envelope");
    documented.remove("failed");
    assert_eq!(samples, documented, "samples of unknown message types");
}

/// The command samples are exactly what the engine sends for the fixture
/// quote, and each reply sample answers its command sample.
#[test]
fn samples_are_what_the_engine_sends_and_answers_echo_them() {
    let contract = &*CONTRACT;
    let quote = fixtures::quote();
    for definition in definitions() {
        let outputs: Vec<Option<&Value>> = definition
            .steps()
            .iter()
            .map(|step| Some(&contract.sample(&step.command.success_reply)["payload"]))
            .collect();
        for sent in commands(&definition) {
            let spec = sent.spec;
            let what = format!("docs/samples/{}.json", spec.command_type);
            let command = decode(contract.sample(&spec.command_type));
            let workflow_id = WorkflowId::new(command.workflow_id);
            let step = sent.step.name.as_str();
            let revision = 1;

            assert_eq!(command.step, step, "{what}");
            let forward = IdempotencyKey::for_command(workflow_id, step, revision);
            if sent.compensation {
                let key = IdempotencyKey::for_compensation(workflow_id, step, revision);
                assert_eq!(command.idempotency_key, key.to_string(), "{what}");
                assert_eq!(command.undoes, Some(forward.to_string()), "{what}");
            } else {
                assert_eq!(command.idempotency_key, forward.to_string(), "{what}");
                assert_eq!(command.undoes, None, "{what}");
            }
            let key = IdempotencyKey::parse(&command.idempotency_key).unwrap();
            let id = CommandId::for_attempt(&key, command.attempt);
            assert_eq!(command.message_id, *id.as_uuid(), "{what}: message_id");
            assert_eq!(command.correlation_id, command.message_id, "{what}");

            // The samples tell of a completed flow whose first notification
            // went out in the transition that ended it.
            let built = spec
                .input
                .build(&InputContext {
                    workflow_id,
                    quote: &quote,
                    outcome: Some("completed"),
                    failure_reason: None,
                    outcome_at: Some(command.sent_at),
                    outputs: &outputs,
                })
                .unwrap();
            assert_eq!(command.payload, built, "{what}: payload");

            for reply_type in [&spec.success_reply, &spec.failure_reply] {
                let what = format!("docs/samples/{reply_type}.json");
                let reply = decode(contract.sample(reply_type));
                assert_eq!(reply.workflow_id, command.workflow_id, "{what}");
                assert_eq!(reply.step, command.step, "{what}");
                assert_eq!(reply.attempt, command.attempt, "{what}");
                assert_eq!(reply.idempotency_key, command.idempotency_key, "{what}");
                assert_eq!(reply.undoes, command.undoes, "{what}");
                assert_eq!(reply.correlation_id, command.message_id, "{what}");
                assert_ne!(reply.message_id, command.message_id, "{what}");
                assert!(reply.sent_at > command.sent_at, "{what}");
            }
            let success = &contract.sample(&spec.success_reply)["payload"];
            if !sent.compensation {
                sent.step.output.check(success).unwrap();
            }
            let failure = &contract.sample(&spec.failure_reply)["payload"];
            serde_json::from_value::<Failure>(failure.clone()).unwrap();
        }
    }
}

/// Whatever the engine builds, in every situation a command is sent in,
/// validates against the command's schema.
#[test]
fn payloads_the_engine_builds_validate() {
    let contract = &*CONTRACT;
    let quote = fixtures::quote();
    let workflow_id = WorkflowId::new(uuid::Uuid::from_u128(
        0x0196_a7c3_58e2_7f14_9b3d_2c6e_1f0a_8d47,
    ));
    // Sub-millisecond digits, which the payload must not carry.
    let outcome_at = chrono::DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap();
    for definition in definitions() {
        let produced: Vec<Option<&Value>> = definition
            .steps()
            .iter()
            .map(|step| Some(&contract.sample(&step.command.success_reply)["payload"]))
            .collect();
        for sent in commands(&definition) {
            let schema = &sent.spec.command_type;
            let mut situations = 0;
            // The first `done` steps produced their output: a flow that
            // stopped (failed, or timed out into "possibly done") at any
            // step, then reports or compensates. Where a required output is
            // missing the engine sends nothing, so nothing is checked.
            for done in 0..=produced.len() {
                let outputs: Vec<Option<&Value>> = produced
                    .iter()
                    .enumerate()
                    .map(|(index, output)| output.filter(|_| index < done))
                    .collect();
                for outcome in OUTCOMES {
                    let failure_reason = match *outcome {
                        "completed" => None,
                        "cancelled" => Some("cancelled on request"),
                        _ => Some("collect_payment: card declined: generic_decline"),
                    };
                    let Ok(payload) = sent.spec.input.build(&InputContext {
                        workflow_id,
                        quote: &quote,
                        outcome: Some(outcome),
                        failure_reason,
                        outcome_at: Some(outcome_at),
                        outputs: &outputs,
                    }) else {
                        continue;
                    };
                    situations += 1;
                    let what = format!(
                        "the {schema} payload the engine builds after {done} steps ({outcome})"
                    );
                    contract.assert_valid(schema, &payload, &what);
                }
            }
            assert!(situations > 0, "{schema}: the engine built no payload");
        }
    }
}

#[test]
fn messages_that_break_the_contract_are_refused() {
    let contract = &*CONTRACT;
    let changed = |message_type: &str, change: &dyn Fn(&mut Value)| {
        let mut sample = contract.sample(message_type).clone();
        change(&mut sample);
        sample
    };
    let refused_by_code =
        |message: &Value| Envelope::decode(&serde_json::to_vec(message).unwrap()).is_err();

    // Amounts are strings, never numbers.
    let order = changed("erp.create_order", &|m| {
        m["payload"]["net_amount"] = json!(11300.00)
    });
    contract.assert_invalid(
        "erp.create_order",
        &order["payload"],
        "a numeric net_amount",
    );
    let order = changed("erp.create_order", &|m| {
        m["payload"]["lines"][0]["unit_price"] = json!(1200);
    });
    contract.assert_invalid(
        "erp.create_order",
        &order["payload"],
        "a numeric unit_price",
    );
    let order = changed("erp.create_order", &|m| {
        m["payload"]["net_amount"] = json!("11,300.00");
    });
    contract.assert_invalid("erp.create_order", &order["payload"], "a formatted amount");
    let refund = changed("payment.refund", &|m| m["payload"]["amount"] = json!(11300));
    contract.assert_invalid("payment.refund", &refund["payload"], "a numeric amount");

    // Ids, currencies and outcomes have their shapes.
    let order = changed("erp.create_order", &|m| {
        m["payload"]["account_id"] = json!("0015e00000ABCDEFG");
    });
    contract.assert_invalid("erp.create_order", &order["payload"], "a 17-char id");
    let collect = changed("payment.collect", &|m| {
        m["payload"]["currency"] = json!("usd")
    });
    contract.assert_invalid(
        "payment.collect",
        &collect["payload"],
        "a lowercase currency",
    );
    let report = changed("salesforce.report_status", &|m| {
        m["payload"]["outcome"] = json!("done");
    });
    contract.assert_invalid(
        "salesforce.report_status",
        &report["payload"],
        "an unknown outcome",
    );

    // A failure reason comes with every outcome but `completed`, and only
    // then; the outcome's time is UTC with milliseconds.
    let report = changed("salesforce.report_status", &|m| {
        m["payload"]["failure_reason"] = json!("create_order: credit hold");
    });
    contract.assert_invalid(
        "salesforce.report_status",
        &report["payload"],
        "a completed report with a failure reason",
    );
    let report = changed("salesforce.report_status", &|m| {
        m["payload"]["outcome"] = json!("compensated");
    });
    contract.assert_invalid(
        "salesforce.report_status",
        &report["payload"],
        "a compensated report without a failure reason",
    );
    let report = changed("salesforce.report_status", &|m| {
        m["payload"]["outcome"] = json!("compensated");
        m["payload"]["failure_reason"] = json!("create_order: credit hold");
    });
    contract.assert_valid(
        "salesforce.report_status",
        &report["payload"],
        "a compensated report with its failure reason",
    );
    for outcome_at in [
        json!("2026-03-02T14:07:43Z"),
        json!("2026-03-02T15:07:43.204+01:00"),
        json!("yesterday"),
        json!(null),
    ] {
        let report = changed("salesforce.report_status", &|m| {
            m["payload"]["outcome_at"] = outcome_at.clone();
        });
        contract.assert_invalid(
            "salesforce.report_status",
            &report["payload"],
            &format!("outcome_at {outcome_at}"),
        );
    }
    let order = changed("erp.create_order", &|m| m["payload"]["lines"] = json!([]));
    contract.assert_invalid(
        "erp.create_order",
        &order["payload"],
        "a quote without lines",
    );

    // The envelope: every required field, in its type; the code agrees.
    let keyless = changed("erp.create_order.succeeded", &|m| {
        m.as_object_mut().unwrap().remove("idempotency_key");
    });
    contract.assert_invalid("envelope", &keyless, "a reply without idempotency_key");
    assert!(refused_by_code(&keyless));
    for field in [
        "message_id",
        "type",
        "workflow_id",
        "attempt",
        "correlation_id",
        "sent_at",
        "payload",
    ] {
        let missing = changed("erp.create_order", &|m| {
            m.as_object_mut().unwrap().remove(field);
        });
        contract.assert_invalid(
            "envelope",
            &missing,
            &format!("an envelope without {field}"),
        );
        assert!(
            refused_by_code(&missing),
            "the code accepts an envelope without {field}"
        );
    }
    let newer = changed("erp.create_order", &|m| {
        m["schema_version"] = json!(SCHEMA_VERSION + 1)
    });
    contract.assert_invalid("envelope", &newer, "a newer schema_version");
    assert!(refused_by_code(&newer));
    let garbled = changed("erp.create_order", &|m| {
        m["message_id"] = json!("not-a-uuid")
    });
    contract.assert_invalid("envelope", &garbled, "a message_id that is no UUID");
    assert!(refused_by_code(&garbled));
    let undated = changed("erp.create_order", &|m| m["sent_at"] = json!("yesterday"));
    contract.assert_invalid("envelope", &undated, "a sent_at that is no time");
    assert!(refused_by_code(&undated));
    let spaced = changed("erp.create_order.succeeded", &|m| {
        m["idempotency_key"] = json!("wf:create order:r1");
    });
    contract.assert_invalid("envelope", &spaced, "a key with a space");
    assert!(IdempotencyKey::parse("wf:create order:r1").is_err());
    let shouting = changed("erp.create_order", &|m| {
        m["type"] = json!("ERP.create_order")
    });
    contract.assert_invalid("envelope", &shouting, "an uppercase type");
    let zeroth = changed("erp.create_order", &|m| m["attempt"] = json!(0));
    contract.assert_invalid("envelope", &zeroth, "attempt 0");

    // Readers ignore fields they do not know: so do the schema and the code.
    let extended = changed("erp.create_order", &|m| m["priority"] = json!("high"));
    contract.assert_valid("envelope", &extended, "an envelope with an extra field");
    assert!(!refused_by_code(&extended));

    // A failure needs `retryable` (a boolean) and `reason`; the code agrees.
    for payload in [
        json!({"reason": "card declined"}),
        json!({"retryable": "false", "reason": "card declined"}),
        json!({"retryable": false}),
        json!("card declined"),
    ] {
        contract.assert_invalid("failed", &payload, "a malformed failure");
        assert!(serde_json::from_value::<Failure>(payload).is_err());
    }

    // A success must carry its declared output; the engine agrees.
    let definition = &definitions()[0];
    let create_order = &definition.steps()[definition.step_index("create_order").unwrap()];
    for payload in [
        json!({}),
        json!({"order_id": 42}),
        json!({"order_id": null}),
        json!([]),
    ] {
        contract.assert_invalid(
            "erp.create_order.succeeded",
            &payload,
            "a success without order_id",
        );
        assert!(create_order.output.check(&payload).is_err(), "{payload}");
    }
    contract.assert_invalid(
        "salesforce.report_status.succeeded",
        &json!(null),
        "a null success",
    );
}

/// The page names the topology exactly as the code declares it.
#[test]
fn the_page_names_the_topology_as_declared() {
    let page = page();
    let topology = Topology::new("").unwrap();
    let mut names = vec![
        topology.commands_exchange(),
        topology.replies_exchange(),
        topology.dead_letter_exchange(),
        topology.replies_queue(),
        topology.dead_letter_queue(),
    ];
    names.extend(DOMAINS.iter().map(|domain| topology.command_queue(domain)));
    for name in names {
        assert!(
            page.contains(&format!("`{{prefix}}{name}`")),
            "docs/message-contract.md does not name `{{prefix}}{name}`"
        );
    }
    for domain in DOMAINS {
        assert!(
            page.contains(&format!("`{domain}.#`")),
            "binding {domain}.#"
        );
    }
    assert!(page.contains(&format!("`{BROKER_DELIVERY_LIMIT}`")));
    assert!(page.contains("`Q2C_AMQP_PREFIX`"));
}
