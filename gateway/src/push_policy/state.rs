//! The policy's memory, sans-IO: message options, who was pushed what, unread badges.
//!
//! Time comes in as an argument; nothing here touches the store, the dispatcher or tokio's
//! runtime, so duplicate suppression and badge counting are tested directly. Every change
//! marks what it touched dirty; the worker writes those records durably (`persist`) and a
//! restart reads them back ([`PolicyState::restore_message`], [`PolicyState::restore_unread`]).
//!
//! A user's badge is exact: the number of the user's pushed messages that none of the user's
//! devices has acknowledged yet. An acknowledgement removes just the messages it names.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::store::RegisteredDevice;
use crate::deliver::PushOptions;
use crate::ids::{MessageId, UserId};

/// Bounds of the policy's memory.
#[derive(Clone, Debug)]
pub struct PolicyLimits {
    /// Messages whose push options are remembered; the oldest are forgotten first.
    pub max_messages: usize,
    /// How long a message's options are remembered (cover the resume window: a session
    /// that ends reports its messages that late).
    pub message_ttl: Duration,
    /// Users with a non-zero badge remembered; beyond it the oldest-looking entry is dropped.
    pub max_badges: usize,
    /// Unacknowledged messages counted per user; beyond it the oldest are forgotten (the
    /// badge stays at this ceiling until acknowledgements bring it down).
    pub max_unread_per_user: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            max_messages: 100_000,
            message_ttl: Duration::from_secs(15 * 60),
            max_badges: 1_000_000,
            max_unread_per_user: 1_000,
        }
    }
}

/// What the policy remembers of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) options: Arc<PushOptions>,
    pub(crate) at: Instant,
    // Small: a message reaches a few devices of a few users (rooms: one per member pushed).
    pub(crate) pushed_tokens: Vec<Arc<str>>,
    pub(crate) acked: Vec<UserId>,
}

/// One push to submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Planned {
    /// Target device.
    pub(crate) device: RegisteredDevice,
    /// The options of the newest message the push covers.
    pub(crate) options: Arc<PushOptions>,
    /// Messages it covers (several when collapsed).
    pub(crate) messages: Vec<MessageId>,
    /// The user's unread count, this push's messages included.
    pub(crate) badge: u32,
}

/// What a `plan` call skipped, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Messages with no remembered options (sent without push options, or forgotten).
    pub(crate) unknown: u32,
    /// Messages the user already acknowledged.
    pub(crate) acked: u32,
    /// (message, device) pairs already pushed.
    pub(crate) duplicates: u32,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct PolicyState {
    limits: PolicyLimits,
    // Message ids increase with time, so the first entry is the oldest.
    messages: BTreeMap<MessageId, Entry>,
    // Per user, the pushed messages no device of theirs has acknowledged: the badge.
    unread: HashMap<UserId, BTreeSet<MessageId>>,
    dirty_messages: BTreeSet<MessageId>,
    dirty_users: HashSet<UserId>,
}

/// Records changed since the last [`PolicyState::take_dirty`]: `None` means deleted.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    pub(crate) messages: Vec<(MessageId, Option<Entry>)>,
    pub(crate) unread: Vec<(UserId, Vec<MessageId>)>,
}

impl Dirty {
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.unread.is_empty()
    }
}

impl PolicyState {
    pub(crate) fn new(limits: PolicyLimits) -> Self {
        Self {
            limits,
            messages: BTreeMap::new(),
            unread: HashMap::new(),
            dirty_messages: BTreeSet::new(),
            dirty_users: HashSet::new(),
        }
    }

    /// Puts back a message read from durable storage.
    pub(crate) fn restore_message(&mut self, id: MessageId, entry: Entry) {
        self.messages.insert(id, entry);
    }

    /// Puts back a user's unacknowledged messages read from durable storage.
    pub(crate) fn restore_unread(
        &mut self,
        user: UserId,
        ids: impl IntoIterator<Item = MessageId>,
    ) {
        let ids: BTreeSet<MessageId> = ids.into_iter().collect();
        if !ids.is_empty() {
            self.unread.insert(user, ids);
        }
    }

    /// The records changed since the last call, for the worker to write.
    pub(crate) fn take_dirty(&mut self) -> Dirty {
        let messages = std::mem::take(&mut self.dirty_messages)
            .into_iter()
            .map(|id| (id, self.messages.get(&id).cloned()))
            .collect();
        let unread = std::mem::take(&mut self.dirty_users)
            .into_iter()
            .map(|user| {
                let ids = self
                    .unread
                    .get(&user)
                    .map(|ids| ids.iter().copied().collect())
                    .unwrap_or_default();
                (user, ids)
            })
            .collect();
        Dirty { messages, unread }
    }

    /// Remembers a message's push options.
    pub(crate) fn on_message(&mut self, now: Instant, id: MessageId, options: Arc<PushOptions>) {
        self.messages.insert(
            id,
            Entry {
                options,
                at: now,
                pushed_tokens: Vec::new(),
                acked: Vec::new(),
            },
        );
        self.dirty_messages.insert(id);
        self.evict(now);
    }

    /// Forgets expired messages and any beyond the count limit.
    pub(crate) fn evict(&mut self, now: Instant) {
        loop {
            let over = self.messages.len() > self.limits.max_messages;
            let Some(entry) = self.messages.first_entry() else {
                break;
            };
            let expired = now.saturating_duration_since(entry.get().at) >= self.limits.message_ttl;
            if !(expired || over) {
                break;
            }
            self.dirty_messages.insert(*entry.key());
            entry.remove();
        }
    }

    /// Messages remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// `user`'s unread badge.
    pub(crate) fn badge(&self, user: &UserId) -> u32 {
        self.unread
            .get(user)
            .map_or(0, |ids| u32::try_from(ids.len()).unwrap_or(u32::MAX))
    }

    /// The pushes that cover `messages` for `user` on `devices`: at most one per (message,
    /// device) ever, one per device per collapse id, each message counted once in the badge.
    pub(crate) fn plan(
        &mut self,
        user: &UserId,
        devices: &[RegisteredDevice],
        messages: &[MessageId],
    ) -> (Vec<Planned>, Skipped) {
        let mut skipped = Skipped::default();
        // Groups in first-seen order: a collapse id gathers its messages; others stand alone.
        let mut groups: Vec<(Option<String>, Vec<MessageId>)> = Vec::new();
        for &id in messages {
            let Some(entry) = self.messages.get(&id) else {
                skipped.unknown += 1;
                continue;
            };
            if entry.acked.contains(user) {
                skipped.acked += 1;
                continue;
            }
            match &entry.options.collapse_id {
                Some(c) => match groups.iter_mut().find(|(k, _)| k.as_ref() == Some(c)) {
                    Some((_, ids)) if !ids.contains(&id) => ids.push(id),
                    Some(_) => {}
                    None => groups.push((Some(c.clone()), vec![id])),
                },
                None if groups.iter().any(|(k, ids)| k.is_none() && ids == &[id]) => {}
                None => groups.push((None, vec![id])),
            }
        }
        let mut planned = Vec::new();
        for (_, ids) in groups {
            // Per device, the group's messages not pushed to it yet.
            let mut per_device = Vec::new();
            for device in devices {
                let token = device.registration.token.as_str();
                let fresh: Vec<MessageId> = ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        let seen = self.messages[id]
                            .pushed_tokens
                            .iter()
                            .any(|t| &**t == token);
                        if seen {
                            skipped.duplicates += 1;
                        }
                        !seen
                    })
                    .collect();
                if !fresh.is_empty() {
                    per_device.push((device, fresh));
                }
            }
            if per_device.is_empty() {
                continue;
            }
            // Each message pushed to the user is one unread until a device acknowledges it.
            for id in &ids {
                if per_device.iter().any(|(_, fresh)| fresh.contains(id)) {
                    self.count_unread(user, *id);
                }
            }
            let badge = self.badge(user);
            for (device, fresh) in per_device {
                let token: Arc<str> = Arc::from(device.registration.token.as_str());
                for id in &fresh {
                    let entry = self.messages.get_mut(id).expect("grouped ids are known");
                    entry.pushed_tokens.push(Arc::clone(&token));
                    self.dirty_messages.insert(*id);
                }
                let newest = *fresh.iter().max().expect("non-empty");
                planned.push(Planned {
                    device: device.clone(),
                    options: Arc::clone(&self.messages[&newest].options),
                    messages: fresh,
                    badge,
                });
            }
        }
        (planned, skipped)
    }

    /// `user` acknowledged `messages` on some device: no more pushes of them to the user,
    /// and the badge drops by the unread ones among them.
    pub(crate) fn acked(&mut self, user: &UserId, messages: &[MessageId]) {
        for id in messages {
            if let Some(entry) = self.messages.get_mut(id)
                && !entry.acked.contains(user)
            {
                entry.acked.push(user.clone());
                self.dirty_messages.insert(*id);
            }
        }
        if let Some(unread) = self.unread.get_mut(user) {
            let before = unread.len();
            for id in messages {
                unread.remove(id);
            }
            if unread.len() != before {
                if unread.is_empty() {
                    self.unread.remove(user);
                }
                self.dirty_users.insert(user.clone());
            }
        }
    }

    fn count_unread(&mut self, user: &UserId, id: MessageId) {
        if !self.unread.contains_key(user) && self.unread.len() >= self.limits.max_badges {
            // Bounded memory beats an exact badge for a user not heard from in a long time.
            if let Some(victim) = self.unread.keys().next().cloned() {
                self.unread.remove(&victim);
                self.dirty_users.insert(victim);
            }
        }
        let unread = self.unread.entry(user.clone()).or_default();
        if unread.insert(id) {
            while unread.len() > self.limits.max_unread_per_user.max(1) {
                unread.pop_first();
            }
            self.dirty_users.insert(user.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use imgate_push::Platform;

    use super::*;
    use crate::deliver::PushAlert;
    use crate::ids::DeviceId;
    use crate::push_policy::store::DeviceRegistration;

    fn device(name: &str, token: &str) -> RegisteredDevice {
        RegisteredDevice {
            device: DeviceId::new(name),
            registration: DeviceRegistration {
                platform: Platform::Apns,
                token: token.into(),
                topic: "t".into(),
                sandbox: false,
                registered_at_ms: 0,
            },
        }
    }

    fn alert(collapse: Option<&str>) -> Arc<PushOptions> {
        Arc::new(PushOptions {
            alert: Some(PushAlert {
                title: "Ann".into(),
                body: "hi".into(),
            }),
            collapse_id: collapse.map(Into::into),
            ..PushOptions::default()
        })
    }

    fn state() -> (PolicyState, Instant) {
        (PolicyState::new(PolicyLimits::default()), Instant::now())
    }

    #[test]
    fn each_message_reaches_each_device_once() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        let devices = [device("phone", "aa"), device("pad", "bb")];
        s.on_message(now, MessageId(1), alert(None));
        let (first, skipped) = s.plan(&ann, &devices, &[MessageId(1)]);
        assert_eq!(first.len(), 2);
        assert_eq!(skipped, Skipped::default());
        // AckTimeout then SessionEnded report the same message again: nothing more.
        let (again, skipped) = s.plan(&ann, &devices, &[MessageId(1), MessageId(1)]);
        assert!(again.is_empty());
        assert_eq!(skipped.duplicates, 2);
        // A device registered later still gets it once.
        let more = [
            device("phone", "aa"),
            device("pad", "bb"),
            device("tv", "cc"),
        ];
        let (late, _) = s.plan(&ann, &more, &[MessageId(1)]);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].device.device, DeviceId::new("tv"));
        assert_eq!(late[0].badge, 1, "the same message is not counted twice");
    }

    #[test]
    fn a_partial_ack_lowers_the_badge_by_what_it_acknowledged() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        let phone = [device("phone", "aa")];
        let mut badges = Vec::new();
        for id in 1..=5 {
            s.on_message(now, MessageId(id), alert(None));
            let (p, _) = s.plan(&ann, &phone, &[MessageId(id)]);
            badges.push(p[0].badge);
        }
        assert_eq!(badges, [1, 2, 3, 4, 5]);
        s.acked(&ann, &[MessageId(1), MessageId(2)]);
        assert_eq!(s.badge(&ann), 3, "3, 4 and 5 are still unread");
        s.on_message(now, MessageId(6), alert(None));
        let (p, _) = s.plan(&ann, &phone, &[MessageId(6)]);
        assert_eq!(p[0].badge, 4);
        // Another user's badge is their own.
        let bob = UserId::new("bob");
        let (p, _) = s.plan(&bob, &[device("phone", "dd")], &[MessageId(6)]);
        assert_eq!(p[0].badge, 1);
        assert_eq!(s.badge(&ann), 4);
    }

    #[test]
    fn acks_from_two_devices_each_lower_the_one_badge() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        let devices = [device("phone", "aa"), device("pad", "bb")];
        for id in 1..=5 {
            s.on_message(now, MessageId(id), alert(None));
            s.plan(&ann, &devices, &[MessageId(id)]);
        }
        assert_eq!(
            s.badge(&ann),
            5,
            "a message pushed to two devices counts once"
        );
        // The phone takes 1 and 2, the pad 2 (again) and 3.
        s.acked(&ann, &[MessageId(1), MessageId(2)]);
        s.acked(&ann, &[MessageId(2), MessageId(3)]);
        assert_eq!(s.badge(&ann), 2);
        // A message never pushed (delivered live, acknowledged) changes nothing.
        s.on_message(now, MessageId(7), alert(None));
        s.acked(&ann, &[MessageId(7)]);
        assert_eq!(s.badge(&ann), 2);
        s.acked(&ann, &[MessageId(4), MessageId(5)]);
        assert_eq!(s.badge(&ann), 0);
        // Acknowledged by one device: never pushed to the other again.
        let (p, skipped) = s.plan(&ann, &devices, &[MessageId(4)]);
        assert!(p.is_empty());
        assert_eq!(skipped.acked, 1);
    }

    #[test]
    fn dirty_records_name_every_change_once() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        s.on_message(now, MessageId(1), alert(None));
        s.plan(&ann, &[device("phone", "aa")], &[MessageId(1)]);
        let dirty = s.take_dirty();
        assert_eq!(dirty.messages.len(), 1);
        let entry = dirty.messages[0].1.clone().expect("kept");
        assert_eq!(&*entry.pushed_tokens[0], "aa");
        assert_eq!(dirty.unread, [(ann.clone(), vec![MessageId(1)])]);
        assert!(s.take_dirty().messages.is_empty(), "taken once");
        s.acked(&ann, &[MessageId(1)]);
        let dirty = s.take_dirty();
        assert_eq!(
            dirty.unread,
            [(ann.clone(), vec![])],
            "an empty set deletes the record"
        );
        s.evict(now + Duration::from_secs(3600));
        assert_eq!(s.take_dirty().messages, [(MessageId(1), None)]);
    }

    #[test]
    fn acked_messages_are_not_pushed() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        s.on_message(now, MessageId(1), alert(None));
        s.acked(&ann, &[MessageId(1)]);
        let (p, skipped) = s.plan(&ann, &[device("phone", "aa")], &[MessageId(1)]);
        assert!(p.is_empty());
        assert_eq!(skipped.acked, 1);
    }

    #[test]
    fn a_collapse_id_makes_one_push_counting_every_message() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        for id in 1..=3 {
            s.on_message(now, MessageId(id), alert(Some("conv-1")));
        }
        s.on_message(now, MessageId(4), alert(None));
        let ids = [MessageId(1), MessageId(2), MessageId(3), MessageId(4)];
        let (p, _) = s.plan(&ann, &[device("phone", "aa")], &ids);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].messages, [MessageId(1), MessageId(2), MessageId(3)]);
        assert_eq!(p[0].badge, 3);
        assert_eq!(p[1].messages, [MessageId(4)]);
        assert_eq!(p[1].badge, 4);
    }

    #[test]
    fn unknown_and_expired_messages_are_not_pushed() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        let (p, skipped) = s.plan(&ann, &[device("phone", "aa")], &[MessageId(9)]);
        assert!(p.is_empty());
        assert_eq!(skipped.unknown, 1);
        s.on_message(now, MessageId(1), alert(None));
        s.evict(now + Duration::from_secs(15 * 60));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = PolicyState::new(PolicyLimits {
            max_messages: 10,
            ..PolicyLimits::default()
        });
        let now = Instant::now();
        for id in 0..100 {
            s.on_message(now, MessageId(id), alert(None));
        }
        assert_eq!(s.len(), 10);
        let (p, _) = s.plan(
            &UserId::new("ann"),
            &[device("phone", "aa")],
            &[MessageId(0), MessageId(99)],
        );
        assert_eq!(p.len(), 1, "the oldest were forgotten");
        assert_eq!(p[0].messages, [MessageId(99)]);
    }
}
