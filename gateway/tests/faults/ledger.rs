//! Accounting: where each delivered message id ended up.

use std::collections::{HashMap, HashSet};

/// The message ids a case handed to the gateway and what became of each.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    delivered: Vec<u64>,
    acked: HashSet<u64>,
    /// Times each id was pushed (a provider answered 200).
    pushed: HashMap<u64, usize>,
    /// Times each id was named in a notice the webhook took.
    reported: HashMap<u64, usize>,
}

/// A case's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) delivered: usize,
    pub(crate) acked: usize,
    pub(crate) pushed: usize,
    pub(crate) reported: usize,
    /// Ids neither acknowledged, pushed nor reported.
    pub(crate) lost: usize,
    /// Pushes beyond the first of an id.
    pub(crate) push_duplicates: usize,
    /// Reports beyond the first of an id (after a crash a report is made again).
    pub(crate) report_duplicates: usize,
}

impl Ledger {
    /// `ids` were handed to the gateway (each must be new).
    pub(crate) fn delivered(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.delivered.extend(ids);
        let unique: HashSet<_> = self.delivered.iter().collect();
        assert_eq!(unique.len(), self.delivered.len(), "message ids are unique");
    }

    /// A device acknowledged `ids`.
    pub(crate) fn acked(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.acked.extend(ids);
    }

    /// A provider took a push of each of `ids` (once per occurrence).
    pub(crate) fn pushed(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            *self.pushed.entry(id).or_default() += 1;
        }
    }

    /// The webhook took a notice naming each of `ids` (once per occurrence).
    pub(crate) fn reported(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            *self.reported.entry(id).or_default() += 1;
        }
    }

    /// Every message the webhook took a notice of.
    pub(crate) fn reports(&mut self, reports: &[crate::hook::Report]) {
        self.reported(reports.iter().flat_map(|r| r.messages.iter().copied()));
    }

    /// Every message `device` received and then acknowledged.
    pub(crate) fn acked_delivers(&mut self, delivers: &[imgate_codec::Deliver]) {
        self.acked(delivers.iter().map(|d| d.message_id));
    }

    /// Ids pushed more than once.
    pub(crate) fn pushed_twice(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .pushed
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The figures, printed as one line under `case`.
    pub(crate) fn tally(&self, case: &str) -> Tally {
        let known: HashSet<u64> = self.delivered.iter().copied().collect();
        for id in self
            .acked
            .iter()
            .chain(self.pushed.keys())
            .chain(self.reported.keys())
        {
            assert!(known.contains(id), "{case}: id {id} was never delivered");
        }
        let lost = self
            .delivered
            .iter()
            .filter(|id| {
                !self.acked.contains(id)
                    && !self.pushed.contains_key(id)
                    && !self.reported.contains_key(id)
            })
            .count();
        let extra = |m: &HashMap<u64, usize>| m.values().map(|n| n - 1).sum();
        let tally = Tally {
            delivered: self.delivered.len(),
            acked: self.acked.len(),
            pushed: self.pushed.len(),
            reported: self.reported.len(),
            lost,
            push_duplicates: extra(&self.pushed),
            report_duplicates: extra(&self.reported),
        };
        eprintln!(
            "fault case {case}: delivered={} acked={} pushed={} reported={} lost={} \
             push_duplicates={} report_duplicates={}",
            tally.delivered,
            tally.acked,
            tally.pushed,
            tally.reported,
            tally.lost,
            tally.push_duplicates,
            tally.report_duplicates
        );
        assert_eq!(tally.lost, 0, "{case}: messages lost: {tally:?}");
        tally
    }
}

/// Waits until the webhook took reports of, and FCM accepted pushes for, as many messages as
/// `ids` holds, then accounts for `ids`: each pushed once and reported once, for `reason`.
pub(crate) async fn pushed_and_reported(
    case: &str,
    ids: Vec<u64>,
    hook: &crate::hook::Hook,
    fcm: &imgate_push::mock::MockFcm,
    reason: &str,
) {
    let n = ids.len();
    hook.until_taken(n, std::time::Duration::from_secs(30))
        .await;
    tokio::time::timeout(std::time::Duration::from_secs(30), fcm.answered(n as u64))
        .await
        .unwrap_or_else(|_| panic!("{case}: not every message pushed"));
    let mut ledger = Ledger::default();
    ledger.delivered(ids);
    ledger.pushed(crate::providers::fcm_pushed(fcm));
    ledger.reports(&hook.taken());
    let tally = ledger.tally(case);
    assert_eq!((tally.pushed, tally.reported), (n, n), "{case}");
    assert_eq!(
        tally.push_duplicates,
        0,
        "{case}: {:?}",
        ledger.pushed_twice()
    );
    assert_eq!(
        hook.by_reason().keys().collect::<Vec<_>>(),
        [reason],
        "{case}"
    );
}
