//! What a run prints: a table for people, JSON for machines. Both carry the
//! durability settings and the verification the figures depend on.

use std::fmt::Write;

use serde::Serialize;

use crate::durability::Durability;
use crate::figures::Percentiles;
use crate::floors::Floors;
use crate::verify::Verified;

/// The target of steps/s as a share of the 16-client transition floor.
pub const THROUGHPUT_TARGET: f64 = 0.65;
/// The target of serial p50 as a multiple of the floor path.
pub const SERIAL_TARGET: f64 = 1.2;

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub run: RunShape,
    /// The settings the figures rest on.
    pub durability: Durability,
    /// What was checked before any figure was printed.
    pub verified: Verified,
    /// Workflows at the run's concurrency.
    pub throughput: Option<Phase>,
    /// Workflows one at a time.
    pub serial: Option<Phase>,
    /// The orchestrator process's peak resident memory, bytes.
    pub orchestrator_peak_rss_bytes: u64,
    /// The floors, when asked for.
    pub floors: Option<Floors>,
    /// q2c's figures as ratios of the floors.
    pub ratios: Option<Ratios>,
    /// The scale test, when asked for.
    pub scale: Option<crate::scale::Scale>,
}

/// Where it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs the bench could use.
    pub cpus: usize,
    /// Postgres's version.
    pub postgres: String,
}

/// How it ran.
#[derive(Debug, Clone, Serialize)]
pub struct RunShape {
    /// The workflow definition.
    pub workflow: String,
    /// Its steps, each one command and one reply.
    pub steps_per_workflow: usize,
    /// Workflows run first and not measured.
    pub warm_up: u32,
    /// Workflows in flight at most, in the throughput phase.
    pub concurrency: u32,
    /// The orchestrator's `RUST_LOG`.
    pub orchestrator_log: String,
    /// What answered the commands.
    pub connectors: String,
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Workflows run.
    pub workflows: usize,
    /// First acceptance to last terminal commit.
    pub seconds: f64,
    /// Workflows per second.
    pub workflows_per_second: f64,
    /// Steps (command and reply) per second.
    pub steps_per_second: f64,
    /// Acceptance to terminal commit, per workflow.
    pub workflow_latency: Percentiles,
    /// Reply consumed to next command confirmed.
    pub handoff_latency: Percentiles,
    /// Command confirmed to its reply consumed (broker and connector).
    pub round_trip_latency: Percentiles,
    /// Acceptance to first command confirmed.
    pub intake_latency: Percentiles,
    /// Postgres commits in the run's database, per workflow.
    pub commits_per_workflow: f64,
    /// Messages through the broker (commands delivered, replies
    /// published), per workflow.
    pub broker_messages_per_workflow: f64,
    /// The orchestrator's CPU time (user and system) in the phase.
    pub orchestrator_cpu_seconds: f64,
}

/// q2c's figures against the floors of the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Steps/s over the 16-client transition floor's commits/s.
    pub steps_per_second_to_transition_floor: Option<f64>,
    /// The target that ratio should reach (at least).
    pub throughput_target: f64,
    /// 5 one-client commits and 4 confirmed request/replies (p50s), ms:
    /// the least a 4-step workflow can take with every guarantee on.
    pub floor_path_ms: f64,
    /// Serial p50 over the floor path.
    pub serial_p50_to_floor_path: Option<f64>,
    /// The target that ratio should stay under.
    pub serial_target: f64,
}

impl Ratios {
    /// The ratios of `throughput` and `serial` to `floors`.
    pub fn of(
        floors: &Floors,
        steps: usize,
        throughput: Option<&Phase>,
        serial: Option<&Phase>,
    ) -> Self {
        let floor_path_ms = (steps as f64 + 1.0) * floors.transition_1_client.latency.p50_ms
            + steps as f64 * floors.request_reply.p50_ms;
        Self {
            steps_per_second_to_transition_floor: throughput
                .map(|phase| phase.steps_per_second / floors.transition_16_clients.per_second),
            throughput_target: THROUGHPUT_TARGET,
            floor_path_ms,
            serial_p50_to_floor_path: serial
                .map(|phase| phase.workflow_latency.p50_ms / floor_path_ms),
            serial_target: SERIAL_TARGET,
        }
    }
}

impl Report {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        row(
            &mut out,
            "machine",
            format!(
                "{} CPUs; Postgres {}",
                self.machine.cpus, self.machine.postgres
            ),
        );
        row(
            &mut out,
            "workflow",
            format!(
                "{} ({} steps), {} warm-up workflows first",
                self.run.workflow, self.run.steps_per_workflow, self.run.warm_up
            ),
        );
        row(&mut out, "connectors", self.run.connectors.clone());
        row(
            &mut out,
            "orchestrator log level",
            self.run.orchestrator_log.clone(),
        );
        let d = &self.durability;
        row(&mut out, "postgres fsync", d.fsync.clone());
        row(
            &mut out,
            "postgres synchronous_commit",
            d.synchronous_commit.clone(),
        );
        row(
            &mut out,
            "postgres full_page_writes",
            d.full_page_writes.clone(),
        );
        row(
            &mut out,
            "postgres wal_sync_method",
            d.wal_sync_method.clone(),
        );
        row(&mut out, "publisher confirms", d.publisher_confirms.clone());
        row(
            &mut out,
            "persistent delivery",
            d.persistent_delivery.clone(),
        );
        row(&mut out, "queues", d.queues.clone());
        let v = &self.verified;
        row(
            &mut out,
            "verified",
            format!(
                "{} workflows `{}`, {} effects each exactly once, nothing unsent or dead-lettered",
                v.workflows, v.outcome, v.effects
            ),
        );
        for (name, phase) in [
            (
                format!("throughput (concurrency {})", self.run.concurrency),
                &self.throughput,
            ),
            ("serial (one at a time)".to_owned(), &self.serial),
        ] {
            let Some(phase) = phase else { continue };
            let _ = writeln!(out);
            let _ = writeln!(out, "{name}");
            row(
                &mut out,
                "workflows",
                format!("{} in {:.2} s", phase.workflows, phase.seconds),
            );
            row(
                &mut out,
                "workflows/s",
                format!("{:.1}", phase.workflows_per_second),
            );
            row(
                &mut out,
                "steps/s",
                format!("{:.1}", phase.steps_per_second),
            );
            row(
                &mut out,
                "workflow latency ms p50 / p95 / p99",
                spread(&phase.workflow_latency),
            );
            row(
                &mut out,
                "intake to 1st command ms p50/p95/p99",
                spread(&phase.intake_latency),
            );
            row(
                &mut out,
                "step handoff ms p50 / p95 / p99",
                spread(&phase.handoff_latency),
            );
            row(
                &mut out,
                "command to reply ms p50 / p95 / p99",
                spread(&phase.round_trip_latency),
            );
            row(
                &mut out,
                "postgres commits / workflow",
                format!("{:.2}", phase.commits_per_workflow),
            );
            row(
                &mut out,
                "broker messages / workflow",
                format!("{:.2}", phase.broker_messages_per_workflow),
            );
            row(
                &mut out,
                "orchestrator CPU s",
                format!(
                    "{:.2} ({:.2} ms / workflow)",
                    phase.orchestrator_cpu_seconds,
                    phase.orchestrator_cpu_seconds * 1000.0 / phase.workflows as f64
                ),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<38} {:.1} MiB",
            "orchestrator peak RSS",
            self.orchestrator_peak_rss_bytes as f64 / 1048576.0
        );
        if let Some(floors) = &self.floors {
            let _ = writeln!(out);
            let _ = writeln!(out, "floors (same database and broker, this run)");
            row(
                &mut out,
                "row sizes",
                format!(
                    "state {} B, command {} B",
                    floors.state_bytes, floors.command_bytes
                ),
            );
            for floor in [&floors.transition_1_client, &floors.transition_16_clients] {
                row(
                    &mut out,
                    &format!("transition tx, {} client(s)", floor.clients),
                    format!(
                        "{:.0}/s, p50 {:.2} ms",
                        floor.per_second, floor.latency.p50_ms
                    ),
                );
            }
            row(
                &mut out,
                "confirmed request/reply",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms",
                    floors.request_reply.p50_ms, floors.request_reply.p99_ms
                ),
            );
        }
        if let Some(ratios) = &self.ratios {
            let _ = writeln!(out);
            let _ = writeln!(out, "ratios");
            if let Some(ratio) = ratios.steps_per_second_to_transition_floor {
                row(
                    &mut out,
                    "steps/s ÷ 16-client transition floor",
                    verdict(
                        ratio,
                        ratio >= ratios.throughput_target,
                        &format!("≥ {}", ratios.throughput_target),
                    ),
                );
            }
            row(
                &mut out,
                "floor path (5 commits + 4 round trips)",
                format!("{:.2} ms", ratios.floor_path_ms),
            );
            if let Some(ratio) = ratios.serial_p50_to_floor_path {
                row(
                    &mut out,
                    "serial p50 ÷ floor path",
                    verdict(
                        ratio,
                        ratio <= ratios.serial_target,
                        &format!("≤ {}", ratios.serial_target),
                    ),
                );
            }
        }
        if let Some(scale) = &self.scale {
            let _ = writeln!(out);
            out.push_str(&scale.table());
        }
        out
    }
}

/// One labelled line of the table.
fn row(out: &mut String, label: &str, value: String) {
    let _ = writeln!(out, "  {label:<38} {value}");
}

fn spread(percentiles: &Percentiles) -> String {
    format!(
        "{:.2} / {:.2} / {:.2}",
        percentiles.p50_ms, percentiles.p95_ms, percentiles.p99_ms
    )
}

fn verdict(ratio: f64, met: bool, target: &str) -> String {
    let mark = if met { "meets" } else { "misses" };
    format!("{ratio:.2} ({mark} the target {target})")
}
