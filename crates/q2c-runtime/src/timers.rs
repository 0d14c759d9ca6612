//! The timer loop: fires step timeouts, retry backoffs and deadlines when
//! they come due.
//!
//! It sleeps until the earliest due timer, but never longer than the poll
//! interval, and wakes early when a commit schedules a new timer. A timer is
//! therefore fired within about a poll interval of its due time even when a
//! wake-up notification is lost. Firing is a transition that deletes the
//! timer row, so when several processes see a timer due, one fires it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use q2c_core::saga::{Event, TimerKind};
use q2c_store::timers::Due;
use q2c_store::{Applied, Store, Trigger};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// How the timer loop paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSettings {
    /// The longest the loop sleeps without looking.
    pub poll_interval: Duration,
    /// Timers fired per round at most.
    pub batch: i64,
}

impl Default for TimerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch: 100,
        }
    }
}

/// Where timers live; the store in production, memory in unit tests.
pub trait TimerSource: Send + Sync {
    /// Timers due at `now`, earliest first.
    fn due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Due>, q2c_store::Error>> + Send;
    /// When the next timer is due.
    fn next_due(
        &self,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, q2c_store::Error>> + Send;
    /// Fires one timer: the transition it causes.
    fn fire(
        &self,
        due: &Due,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Applied, q2c_store::Error>> + Send;
    /// Moves a timer that failed to fire to a later time.
    fn postpone(
        &self,
        due: &Due,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), q2c_store::Error>> + Send;
}

impl TimerSource for Store {
    async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Due>, q2c_store::Error> {
        self.due_timers(now, limit).await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, q2c_store::Error> {
        self.next_timer_due().await
    }

    async fn fire(&self, due: &Due, now: DateTime<Utc>) -> Result<Applied, q2c_store::Error> {
        let event = Event::TimerFired(due.timer.clone());
        self.apply(
            due.workflow_id,
            &event,
            &Trigger::Timer(due.timer.clone()),
            now,
        )
        .await
    }

    async fn postpone(&self, due: &Due, until: DateTime<Utc>) -> Result<(), q2c_store::Error> {
        self.postpone_timer(due.workflow_id, &due.timer, until)
            .await
    }
}

/// How long a timer that failed to fire waits before it is tried again.
const POSTPONE_FAILED: TimeDelta = TimeDelta::seconds(30);

/// Fires timers until shutdown. `wake` is notified when a commit schedules
/// a timer; `relay_wake` is notified when a firing queues commands.
pub async fn run<S: TimerSource, C: Clock>(
    source: S,
    clock: C,
    settings: TimerSettings,
    wake: Arc<Notify>,
    relay_wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<(), q2c_store::Error> {
    loop {
        let now = clock.now();
        let due = source.due(now, settings.batch).await?;
        let mut failed = false;
        for timer in &due {
            match source.fire(timer, now).await {
                Ok(Applied::Applied {
                    commands,
                    status,
                    quote_id,
                    finished,
                    ..
                }) => {
                    tracing::info!(workflow_id = %timer.workflow_id, %quote_id, timer = %timer.timer, status = status.as_str(), "timer fired");
                    metrics::counter!("q2c_timers_fired_total").increment(1);
                    if timer.timer.kind == TimerKind::Deadline {
                        tracing::warn!(workflow_id = %timer.workflow_id, %quote_id, step = %timer.timer.step, status = status.as_str(), "deadline passed; the workflow is escalated as its definition says");
                        metrics::counter!("q2c_deadline_escalations_total", "step" => timer.timer.step.clone()).increment(1);
                    }
                    if finished {
                        metrics::counter!("q2c_workflows_finished_total", "outcome" => status.as_str()).increment(1);
                    }
                    if commands > 0 {
                        relay_wake.notify_one();
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    failed = true;
                    tracing::error!(workflow_id = %timer.workflow_id, timer = %timer.timer, %error, "timer not fired; it will be retried");
                    // Set it back so the timers behind it still fire.
                    if let Err(error) = source.postpone(timer, now + POSTPONE_FAILED).await {
                        tracing::error!(workflow_id = %timer.workflow_id, timer = %timer.timer, %error, "timer could not be postponed");
                    }
                }
            }
        }
        if !failed && i64::try_from(due.len()).unwrap_or(i64::MAX) >= settings.batch {
            continue;
        }
        let next = source.next_due().await?;
        // A timer that failed to fire is still due: wait a whole interval
        // before trying it again rather than spinning on it.
        let pause = if failed {
            settings.poll_interval
        } else {
            sleep_for(clock.now(), next, settings.poll_interval)
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// How long to sleep: until the next due time, at most the poll interval.
fn sleep_for(now: DateTime<Utc>, next: Option<DateTime<Utc>>, poll_interval: Duration) -> Duration {
    match next {
        Some(due) => (due - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(poll_interval),
        None => poll_interval,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::TimeDelta;
    use q2c_core::domain::ids::WorkflowId;
    use q2c_core::saga::{Status, TimerId, TimerKind};

    use super::*;
    use crate::clock::TokioClock;

    /// Timers in memory; records when each was fired.
    #[derive(Default)]
    struct Memory {
        scheduled: Mutex<Vec<Due>>,
        fired: Mutex<Vec<(String, DateTime<Utc>)>>,
    }

    impl Memory {
        fn schedule(&self, name: &str, due_at: DateTime<Utc>) {
            self.scheduled.lock().unwrap().push(Due {
                workflow_id: WorkflowId::new(uuid::Uuid::nil()),
                timer: TimerId {
                    kind: TimerKind::StepTimeout,
                    step: name.to_owned(),
                    revision: 1,
                    attempt: 1,
                },
                due_at,
            });
        }

        fn fired(&self) -> Vec<(String, DateTime<Utc>)> {
            self.fired.lock().unwrap().clone()
        }
    }

    impl TimerSource for Arc<Memory> {
        async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Due>, q2c_store::Error> {
            let mut due: Vec<Due> = self
                .scheduled
                .lock()
                .unwrap()
                .iter()
                .filter(|timer| timer.due_at <= now)
                .cloned()
                .collect();
            due.sort_by_key(|timer| timer.due_at);
            due.truncate(usize::try_from(limit).unwrap());
            Ok(due)
        }

        async fn next_due(&self) -> Result<Option<DateTime<Utc>>, q2c_store::Error> {
            Ok(self
                .scheduled
                .lock()
                .unwrap()
                .iter()
                .map(|timer| timer.due_at)
                .min())
        }

        async fn postpone(&self, due: &Due, until: DateTime<Utc>) -> Result<(), q2c_store::Error> {
            for timer in self.scheduled.lock().unwrap().iter_mut() {
                if timer == due {
                    timer.due_at = until;
                }
            }
            Ok(())
        }

        async fn fire(&self, due: &Due, now: DateTime<Utc>) -> Result<Applied, q2c_store::Error> {
            self.fired
                .lock()
                .unwrap()
                .push((due.timer.step.clone(), now));
            if due.timer.step == "broken" {
                return Err(q2c_store::Error::CorruptRecord {
                    workflow_id: uuid::Uuid::nil(),
                    reason: "unreadable".into(),
                });
            }
            self.scheduled.lock().unwrap().retain(|timer| timer != due);
            Ok(Applied::Applied {
                status: Status::Running,
                version: 2,
                commands: 1,
                quote_id: "a0q5e00000ABCDEFGH".into(),
                answered: None,
                finished: false,
                late: false,
            })
        }
    }

    fn base() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    struct Running {
        memory: Arc<Memory>,
        wake: Arc<Notify>,
        relay_wake: Arc<Notify>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), q2c_store::Error>>,
    }

    fn start(memory: Arc<Memory>) -> Running {
        let wake = Arc::new(Notify::new());
        let relay_wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            memory.clone(),
            TokioClock::starting_at(base()),
            TimerSettings::default(),
            wake.clone(),
            relay_wake.clone(),
            shutdown.clone(),
        ));
        Running {
            memory,
            wake,
            relay_wake,
            shutdown,
            task,
        }
    }

    /// Lets the loop run while virtual time moves on by `seconds`.
    async fn advance(seconds: f64) {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_timer_fires_within_a_second_of_its_due_time() {
        let memory = Arc::new(Memory::default());
        memory.schedule("in_five_seconds", base() + TimeDelta::seconds(5));
        memory.schedule("in_ninety_seconds", base() + TimeDelta::seconds(90));
        let running = start(memory);

        advance(4.9).await;
        assert!(running.memory.fired().is_empty(), "nothing fires early");
        advance(1.2).await;
        let fired = running.memory.fired();
        assert_eq!(fired.len(), 1);
        let late = fired[0].1 - (base() + TimeDelta::seconds(5));
        assert!(
            late >= TimeDelta::zero() && late <= TimeDelta::seconds(1),
            "fired {late} late"
        );

        advance(90.0).await;
        let fired = running.memory.fired();
        assert_eq!(fired.len(), 2);
        let late = fired[1].1 - (base() + TimeDelta::seconds(90));
        assert!(
            late >= TimeDelta::zero() && late <= TimeDelta::seconds(1),
            "fired {late} late"
        );
        running.shutdown.cancel();
        running.task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_scheduled_while_sleeping_fires_on_time_without_a_wake_up() {
        let memory = Arc::new(Memory::default());
        let running = start(memory);
        advance(10.0).await;
        // Scheduled behind the loop's back: no notification.
        running
            .memory
            .schedule("late_comer", base() + TimeDelta::seconds(12));
        advance(3.5).await;
        let fired = running.memory.fired();
        assert_eq!(fired.len(), 1);
        let late = fired[0].1 - (base() + TimeDelta::seconds(12));
        assert!(
            late >= TimeDelta::zero() && late <= TimeDelta::seconds(1),
            "fired {late} late"
        );
        running.shutdown.cancel();
        running.task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_fires_a_timer_that_is_already_due_at_once() {
        let memory = Arc::new(Memory::default());
        let running = start(memory);
        advance(0.2).await;
        running.memory.schedule("overdue", base());
        running.wake.notify_one();
        advance(0.01).await;
        let fired = running.memory.fired();
        assert_eq!(fired.len(), 1);
        assert!(fired[0].1 - base() <= TimeDelta::milliseconds(300));
        // Firing queued a command, so the relay was told.
        tokio::time::timeout(Duration::from_millis(1), running.relay_wake.notified())
            .await
            .expect("relay woken");
        running.shutdown.cancel();
        running.task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fails_to_fire_is_set_back_and_holds_up_no_other() {
        let memory = Arc::new(Memory::default());
        memory.schedule("broken", base());
        memory.schedule("fine", base() + TimeDelta::seconds(2));
        let running = start(memory);
        advance(3.5).await;
        let fired = running.memory.fired();
        let broken = fired.iter().filter(|(step, _)| step == "broken").count();
        assert_eq!(broken, 1, "set back 30s after failing: {fired:?}");
        advance(30.0).await;
        let fired = running.memory.fired();
        let broken = fired.iter().filter(|(step, _)| step == "broken").count();
        assert_eq!(broken, 2, "tried again once due again: {fired:?}");
        assert!(
            fired.iter().any(|(step, _)| step == "fine"),
            "others still fire"
        );
        running.shutdown.cancel();
        running.task.await.unwrap().unwrap();
    }

    #[test]
    fn the_loop_sleeps_until_the_next_timer_but_never_past_the_poll_interval() {
        let poll = Duration::from_secs(1);
        assert_eq!(sleep_for(base(), None, poll), poll);
        assert_eq!(
            sleep_for(base(), Some(base() + TimeDelta::milliseconds(300)), poll),
            Duration::from_millis(300)
        );
        assert_eq!(
            sleep_for(base(), Some(base() + TimeDelta::days(30)), poll),
            poll
        );
        assert_eq!(
            sleep_for(base(), Some(base() - TimeDelta::seconds(3)), poll),
            Duration::ZERO
        );
    }
}
