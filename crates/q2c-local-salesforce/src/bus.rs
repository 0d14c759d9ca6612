//! The event bus: one log per topic, with replay ids, retention, a wake-up
//! for streams waiting on new events, and the counters `/local/status`
//! reports.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use q2c_pubsub::{ConsumerEvent, ProducerEvent, ReplayPreset};
use tokio::{sync::watch, time::Instant};

use crate::{catalog::EventDefinition, status::TopicStatus};

/// Locks a mutex even if a panicking holder poisoned it: every critical
/// section here leaves its data consistent, so the data is still good.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A replay id on the wire: the counter as 8 bytes, big-endian.
pub fn encode_replay_id(counter: u64) -> Vec<u8> {
    counter.to_be_bytes().to_vec()
}

/// The counter of a replay id, if it has the 8 bytes this server gives out.
pub fn decode_replay_id(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// Why a subscription cannot start where it asked to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StartError {
    /// CUSTOM without a replay id.
    MissingReplayId,
    /// A replay id this server never gave out, or one whose event has left
    /// retention.
    Corrupted(String),
}

/// The next events are gone: the stream is behind what is retained.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expired;

/// An event as stored, with when it was published (for retention).
struct Stored {
    replay: u64,
    event: ProducerEvent,
    at: Instant,
}

/// One topic's events. Replay ids are 1, 2, 3, ... in publishing order; the
/// retained events are always a contiguous run of them ending at `latest`.
#[derive(Default)]
struct Log {
    events: VecDeque<Stored>,
    /// The replay id given out last (0 before the first event).
    latest: u64,
    /// Every event up to and including this replay id has left retention.
    expired_through: u64,
    published: u64,
}

impl Log {
    fn prune(&mut self, now: Instant, retention: Duration) {
        while let Some(oldest) = self.events.front() {
            if now.saturating_duration_since(oldest.at) < retention {
                break;
            }
            self.expired_through = oldest.replay;
            self.events.pop_front();
        }
    }
}

#[derive(Default)]
struct Counters {
    open_streams: u32,
    max_open_streams: u32,
    subscribe_calls: u64,
}

/// A topic: its event definition, its log and its streams' counters.
pub(crate) struct Topic {
    pub def: EventDefinition,
    retention: Duration,
    log: Mutex<Log>,
    /// The latest replay id, for streams waiting on new events.
    latest: watch::Sender<u64>,
    counters: Mutex<Counters>,
}

impl Topic {
    pub fn new(def: EventDefinition, retention: Duration) -> Self {
        Self {
            def,
            retention,
            log: Mutex::default(),
            latest: watch::Sender::new(0),
            counters: Mutex::default(),
        }
    }

    /// Appends events, giving each the next replay id, and wakes the
    /// streams waiting on this topic. The events must already be valid.
    pub fn append(&self, events: Vec<ProducerEvent>) -> Vec<u64> {
        let now = Instant::now();
        let (ids, latest) = {
            let mut log = lock(&self.log);
            let ids = events
                .into_iter()
                .map(|event| {
                    log.latest += 1;
                    log.published += 1;
                    let replay = log.latest;
                    log.events.push_back(Stored {
                        replay,
                        event,
                        at: now,
                    });
                    replay
                })
                .collect();
            log.prune(now, self.retention);
            (ids, log.latest)
        };
        self.latest.send_replace(latest);
        ids
    }

    /// Where a new subscription stands: the replay id after which its
    /// events begin.
    pub fn start_position(
        &self,
        preset: ReplayPreset,
        replay_id: &[u8],
    ) -> Result<u64, StartError> {
        let mut log = lock(&self.log);
        log.prune(Instant::now(), self.retention);
        match preset {
            ReplayPreset::Latest => Ok(log.latest),
            ReplayPreset::Earliest => Ok(log.expired_through),
            ReplayPreset::Custom => {
                if replay_id.is_empty() {
                    return Err(StartError::MissingReplayId);
                }
                let Some(counter) = decode_replay_id(replay_id) else {
                    return Err(StartError::Corrupted(format!(
                        "replay id {} is not one this org gave out",
                        hex(replay_id)
                    )));
                };
                if counter > log.latest {
                    Err(StartError::Corrupted(format!(
                        "replay id {counter:016x} is after the latest one, {:016x}",
                        log.latest
                    )))
                } else if counter <= log.expired_through {
                    Err(StartError::Corrupted(format!(
                        "replay id {counter:016x} has left retention (or was never given out)"
                    )))
                } else {
                    Ok(counter)
                }
            }
        }
    }

    /// Up to `max` events after `cursor`, or [`Expired`] when some of the
    /// events right after `cursor` have left retention.
    pub fn read_after(&self, cursor: u64, max: usize) -> Result<Vec<ConsumerEvent>, Expired> {
        let mut log = lock(&self.log);
        log.prune(Instant::now(), self.retention);
        if cursor < log.expired_through {
            return Err(Expired);
        }
        let Some(first) = log.events.front().map(|e| e.replay) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from((cursor + 1).saturating_sub(first)).unwrap_or(usize::MAX);
        Ok(log
            .events
            .iter()
            .skip(skip)
            .take(max)
            .map(|stored| ConsumerEvent {
                event: Some(stored.event.clone()),
                replay_id: encode_replay_id(stored.replay),
            })
            .collect())
    }

    /// The latest replay id given out (0 before the first event).
    pub fn latest(&self) -> u64 {
        lock(&self.log).latest
    }

    /// A receiver that wakes when events are appended.
    pub fn watch_latest(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Every event published so far leaves retention now.
    pub fn expire_all(&self) {
        let mut log = lock(&self.log);
        log.expired_through = log.latest;
        log.events.clear();
    }

    /// Counts a Subscribe call for this topic.
    pub fn count_subscribe_call(&self) {
        lock(&self.counters).subscribe_calls += 1;
    }

    /// Counts an open stream until the returned guard is dropped.
    pub fn open_stream(self: &Arc<Self>) -> OpenStream {
        let mut counters = lock(&self.counters);
        counters.open_streams += 1;
        counters.max_open_streams = counters.max_open_streams.max(counters.open_streams);
        OpenStream {
            topic: Arc::clone(self),
        }
    }

    /// What `/local/status` says of this topic.
    pub fn status(&self) -> TopicStatus {
        let (events, published, latest) = {
            let mut log = lock(&self.log);
            log.prune(Instant::now(), self.retention);
            (log.events.len(), log.published, log.latest)
        };
        let counters = lock(&self.counters);
        TopicStatus {
            schema_id: self.def.schema_id.clone(),
            events: events as u64,
            published,
            latest_replay_id: (latest > 0).then(|| hex(&encode_replay_id(latest))),
            open_streams: counters.open_streams,
            max_open_streams: counters.max_open_streams,
            subscribe_calls: counters.subscribe_calls,
        }
    }
}

/// An open stream, counted as open until dropped.
pub(crate) struct OpenStream {
    topic: Arc<Topic>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut counters = lock(&self.topic.counters);
        counters.open_streams = counters.open_streams.saturating_sub(1);
    }
}

/// Lowercase hex, the way the console and status show replay ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(retention: Duration) -> Arc<Topic> {
        let def = EventDefinition::all().unwrap().remove(0);
        Arc::new(Topic::new(def, retention))
    }

    fn event(id: &str) -> ProducerEvent {
        ProducerEvent {
            id: id.to_owned(),
            ..ProducerEvent::default()
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn replay_ids_count_from_one() {
        let topic = topic(DAY);
        assert_eq!(topic.append(vec![event("a"), event("b")]), vec![1, 2]);
        assert_eq!(topic.append(vec![event("c")]), vec![3]);
        let after_one = topic.read_after(1, 10).unwrap();
        assert_eq!(after_one.len(), 2);
        assert_eq!(after_one[0].replay_id, encode_replay_id(2));
        assert_eq!(topic.read_after(0, 1).unwrap().len(), 1);
        assert!(topic.read_after(3, 10).unwrap().is_empty());
    }

    #[test]
    fn presets_and_custom_replay_ids() {
        let topic = topic(DAY);
        assert!(matches!(
            topic.start_position(ReplayPreset::Custom, &encode_replay_id(1)),
            Err(StartError::Corrupted(_))
        ));
        topic.append(vec![event("a"), event("b")]);
        assert_eq!(topic.start_position(ReplayPreset::Latest, &[]), Ok(2));
        assert_eq!(topic.start_position(ReplayPreset::Earliest, &[]), Ok(0));
        assert_eq!(
            topic.start_position(ReplayPreset::Custom, &encode_replay_id(1)),
            Ok(1)
        );
        assert_eq!(
            topic.start_position(ReplayPreset::Custom, &[]),
            Err(StartError::MissingReplayId)
        );
        for bad in [vec![1, 2, 3], encode_replay_id(3), encode_replay_id(0)] {
            assert!(matches!(
                topic.start_position(ReplayPreset::Custom, &bad),
                Err(StartError::Corrupted(_))
            ));
        }
        topic.expire_all();
        assert!(matches!(
            topic.start_position(ReplayPreset::Custom, &encode_replay_id(2)),
            Err(StartError::Corrupted(_))
        ));
        assert_eq!(topic.start_position(ReplayPreset::Earliest, &[]), Ok(2));
        assert_eq!(topic.read_after(1, 10), Err(Expired));
        assert_eq!(topic.read_after(2, 10), Ok(Vec::new()));
    }

    #[test]
    fn zero_retention_keeps_nothing() {
        let topic = topic(Duration::ZERO);
        topic.append(vec![event("a")]);
        assert_eq!(topic.status().events, 0);
        assert_eq!(topic.status().published, 1);
        assert_eq!(topic.start_position(ReplayPreset::Earliest, &[]), Ok(1));
    }

    #[test]
    fn counts_open_streams_and_their_maximum() {
        let topic = topic(DAY);
        let a = topic.open_stream();
        let b = topic.open_stream();
        drop(a);
        let _c = topic.open_stream();
        drop(b);
        let status = topic.status();
        assert_eq!((status.open_streams, status.max_open_streams), (1, 2));
    }
}
