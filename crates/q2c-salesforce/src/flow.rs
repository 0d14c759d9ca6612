//! Flow control and position bookkeeping for one Pub/Sub subscription.
//!
//! Pure: the subscriber tells it what arrived and what committed, and it
//! says how many events to request and which replay id may be stored. Two
//! rules keep the stored position honest:
//!
//! - events are requested only as fast as they are committed: requested but
//!   not yet received, plus received but not yet committed, never exceed
//!   the limit (Salesforce allows at most 100 outstanding);
//! - the position only moves over events whose work has committed, in
//!   delivery order; a keepalive's `latest_replay_id` is taken only once
//!   every event delivered before it has committed.

use std::collections::VecDeque;

/// Salesforce's cap on events outstanding per stream.
pub const MAX_OUTSTANDING: u32 = 100;

/// An opaque replay id, as delivered.
pub type ReplayId = Vec<u8>;

/// One stream's flow state.
#[derive(Debug, Clone)]
pub struct Flow {
    limit: u32,
    /// Requested and not yet delivered, by this side's own count: it
    /// includes requests the server may not have read yet, which its
    /// `pending_num_requested` cannot show.
    requested: u32,
    /// What the server last said it still owes.
    server_pending: u32,
    /// Delivered, in order, with whether each one's work has committed.
    delivered: VecDeque<(ReplayId, bool)>,
    /// Replay ids delivered lately, to recognise a second copy of an event
    /// (which the server does not count twice against what it owes).
    recent: VecDeque<ReplayId>,
    /// A keepalive position waiting for the events before it to commit.
    keepalive: Option<ReplayId>,
}

/// Why a flow cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the outstanding limit must be 1 to {MAX_OUTSTANDING}, not {0}")]
pub struct InvalidLimit(pub u32);

impl Flow {
    /// A flow allowing `limit` events outstanding.
    pub fn new(limit: u32) -> Result<Flow, InvalidLimit> {
        if limit == 0 || limit > MAX_OUTSTANDING {
            return Err(InvalidLimit(limit));
        }
        Ok(Flow {
            limit,
            requested: 0,
            server_pending: 0,
            delivered: VecDeque::new(),
            recent: VecDeque::new(),
            keepalive: None,
        })
    }

    /// How many more events to request now, if any: what keeps requested
    /// plus uncommitted at the limit. Requested counts the larger of this
    /// side's count and the server's last report, so neither a request still
    /// on its way nor a miscount on either side can push the server past it.
    pub fn to_request(&mut self) -> Option<u32> {
        let uncommitted = u32::try_from(self.delivered.len()).unwrap_or(u32::MAX);
        let room = self
            .limit
            .saturating_sub(self.outstanding().saturating_add(uncommitted));
        if room == 0 {
            return None;
        }
        self.requested = self.outstanding() + room;
        Some(room)
    }

    /// Events arrived, in order. `pending` is the server's count of what it
    /// may still send (`pending_num_requested`) when it sent them.
    pub fn delivered(&mut self, replay_ids: &[ReplayId], pending: i32) {
        for replay_id in replay_ids {
            self.delivered.push_back((replay_id.clone(), false));
            if self.recent.contains(replay_id) {
                continue;
            }
            self.requested = self.requested.saturating_sub(1);
            if self.recent.len() == 2 * MAX_OUTSTANDING as usize {
                self.recent.pop_front();
            }
            self.recent.push_back(replay_id.clone());
        }
        self.server_pending = self.pending(pending);
    }

    /// A keepalive: nothing new, but the stream is at `latest`. Returns the
    /// position to store now, if every earlier event has committed.
    pub fn keepalive(&mut self, latest: ReplayId, pending: i32) -> Option<ReplayId> {
        self.server_pending = self.pending(pending);
        if self.delivered.is_empty() {
            self.keepalive = None;
            Some(latest)
        } else {
            self.keepalive = Some(latest);
            None
        }
    }

    /// The work of `replay_id` committed. Returns the position that may be
    /// stored now: the last event of the committed run at the head of the
    /// delivery order (or a keepalive behind it), if the head moved.
    pub fn committed(&mut self, replay_id: &[u8]) -> Option<ReplayId> {
        if let Some(entry) = self
            .delivered
            .iter_mut()
            .find(|(id, done)| id == replay_id && !done)
        {
            entry.1 = true;
        }
        let mut position = None;
        while let Some((_, true)) = self.delivered.front() {
            position = self.delivered.pop_front().map(|(id, _)| id);
        }
        if self.delivered.is_empty()
            && let Some(keepalive) = self.keepalive.take()
        {
            return Some(keepalive);
        }
        position
    }

    /// Events requested and not yet delivered, as far as this side knows:
    /// while any are, the server owes events or keepalives.
    pub fn outstanding(&self) -> u32 {
        self.requested.max(self.server_pending)
    }

    fn pending(&self, reported: i32) -> u32 {
        u32::try_from(reported.max(0)).unwrap_or(0).min(self.limit)
    }

    /// Delivered events whose work has not committed yet.
    pub fn uncommitted(&self) -> usize {
        self.delivered.iter().filter(|(_, done)| !done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ReplayId {
        vec![0, 0, 0, 0, 0, 0, 0, n]
    }

    #[test]
    fn requests_only_as_fast_as_events_commit() {
        let mut flow = Flow::new(3).unwrap();
        assert_eq!(flow.to_request(), Some(3));
        assert_eq!(flow.to_request(), None, "all requested");
        flow.delivered(&[id(1), id(2)], 1);
        assert_eq!(
            flow.to_request(),
            None,
            "two uncommitted and one pending fill it"
        );
        assert_eq!(flow.committed(&id(1)), Some(id(1)));
        assert_eq!(flow.to_request(), Some(1));
    }

    #[test]
    fn the_position_moves_only_over_committed_events_in_order() {
        let mut flow = Flow::new(10).unwrap();
        flow.to_request();
        flow.delivered(&[id(1), id(2), id(3)], 7);
        assert_eq!(flow.committed(&id(2)), None, "1 has not committed");
        assert_eq!(flow.committed(&id(1)), Some(id(2)), "1 and 2 now");
        assert_eq!(flow.committed(&id(3)), Some(id(3)));
        assert_eq!(flow.uncommitted(), 0);
    }

    #[test]
    fn a_keepalive_waits_for_earlier_events_to_commit() {
        let mut flow = Flow::new(10).unwrap();
        flow.to_request();
        flow.delivered(&[id(1)], 9);
        assert_eq!(flow.keepalive(id(9), 9), None);
        assert_eq!(flow.committed(&id(1)), Some(id(9)));
        assert_eq!(
            flow.keepalive(id(12), 9),
            Some(id(12)),
            "nothing pending: store at once"
        );
    }

    #[test]
    fn never_more_than_salesforce_allows() {
        assert_eq!(Flow::new(101).unwrap_err(), InvalidLimit(101));
        assert!(Flow::new(0).is_err());
        let mut flow = Flow::new(MAX_OUTSTANDING).unwrap();
        assert_eq!(flow.to_request(), Some(100));
        flow.delivered(&[id(1)], 150);
        assert_eq!(
            flow.to_request(),
            None,
            "the server's count is capped at the limit"
        );
    }

    use proptest::prelude::*;

    #[test]
    fn a_request_on_its_way_is_not_requested_again() {
        let mut flow = Flow::new(100).unwrap();
        assert_eq!(flow.to_request(), Some(100));
        flow.delivered(&[id(1), id(2), id(3)], 97);
        for n in 1..=3 {
            flow.committed(&id(n));
        }
        assert_eq!(flow.to_request(), Some(3), "back to 100");
        // The server sent the next event before it read those 3.
        flow.delivered(&[id(4)], 96);
        flow.committed(&id(4));
        assert_eq!(flow.to_request(), Some(1), "99 owed by our count, not 96");
    }

    #[test]
    fn a_second_copy_of_an_event_is_not_counted_as_delivered() {
        let mut flow = Flow::new(10).unwrap();
        assert_eq!(flow.to_request(), Some(10));
        flow.delivered(&[id(1), id(1)], 9);
        assert_eq!(flow.uncommitted(), 2);
        flow.committed(&id(1));
        flow.committed(&id(1));
        assert_eq!(flow.to_request(), Some(1));
        assert_eq!(flow.outstanding(), 10);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Deliver(u8),
        /// The server delivers an event it already delivered.
        Copy,
        /// The oldest request on its way reaches the server.
        Arrive,
        Commit(usize),
        Keepalive,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1_u8..5).prop_map(Step::Deliver),
            Just(Step::Copy),
            Just(Step::Arrive),
            Just(Step::Arrive),
            any::<usize>().prop_map(Step::Commit),
            Just(Step::Keepalive),
        ]
    }

    proptest! {
        /// Whatever arrives and commits, in whatever order, with requests
        /// still on their way and events delivered twice: the server never
        /// owes more than the limit, and a stored position never passes an
        /// event whose work has not committed.
        #[test]
        fn outstanding_stays_bounded_and_the_position_never_skips_work(
            limit in 1_u32..=MAX_OUTSTANDING,
            steps in prop::collection::vec(step(), 0..120),
        ) {
            let mut flow = Flow::new(limit).unwrap();
            let mut next_id = 0_u8;
            let mut server_owes = flow.to_request().unwrap_or(0);
            let mut on_the_way: VecDeque<u32> = VecDeque::new();
            let mut delivered: Vec<(ReplayId, bool)> = Vec::new();
            for step in steps {
                match step {
                    Step::Deliver(count) => {
                        let count = u32::from(count).min(server_owes);
                        let ids: Vec<ReplayId> = (0..count).map(|_| { next_id = next_id.wrapping_add(1); id(next_id) }).collect();
                        server_owes -= count;
                        delivered.extend(ids.iter().map(|id| (id.clone(), false)));
                        flow.delivered(&ids, i32::try_from(server_owes).unwrap());
                    }
                    Step::Copy => {
                        if next_id == 0 { continue; }
                        delivered.push((id(next_id), false));
                        flow.delivered(&[id(next_id)], i32::try_from(server_owes).unwrap());
                    }
                    Step::Arrive => {
                        if let Some(more) = on_the_way.pop_front() {
                            server_owes += more;
                            prop_assert!(server_owes <= limit, "the server owes {} > {}", server_owes, limit);
                        }
                    }
                    Step::Commit(pick) => {
                        let open: Vec<usize> = (0..delivered.len()).filter(|i| !delivered[*i].1).collect();
                        if open.is_empty() { continue; }
                        // Copies are one event: the commit counts for the
                        // first of them still open.
                        let picked = delivered[open[pick % open.len()]].0.clone();
                        let index = open.into_iter().find(|at| delivered[*at].0 == picked).unwrap();
                        delivered[index].1 = true;
                        if let Some(position) = flow.committed(&delivered[index].0.clone()) {
                            // Some delivery of that event has every delivery
                            // before it committed (a copy is the same event).
                            // A keepalive's position needs all of them.
                            let mut deliveries = (0..delivered.len())
                                .filter(|at| delivered[*at].0 == position)
                                .peekable();
                            let covered = if deliveries.peek().is_none() {
                                delivered.iter().all(|(_, done)| *done)
                            } else {
                                deliveries.any(|at| delivered[..=at].iter().all(|(_, done)| *done))
                            };
                            prop_assert!(covered, "position passed uncommitted work");
                        }
                    }
                    Step::Keepalive => {
                        let stored = flow.keepalive(id(200), i32::try_from(server_owes).unwrap());
                        if stored.is_some() {
                            prop_assert!(delivered.iter().all(|(_, done)| *done), "keepalive stored over uncommitted work");
                        }
                    }
                }
                if let Some(more) = flow.to_request() {
                    on_the_way.push_back(more);
                }
                let in_flight: u32 = on_the_way.iter().sum();
                prop_assert!(server_owes + in_flight <= limit, "{} owed + {} on the way > {}", server_owes, in_flight, limit);
            }
        }
    }
}
