//! The policy's memory, sans-IO: message options, who was pushed what, unread badges.
//!
//! Time comes in as an argument; nothing here touches the store, the dispatcher or tokio's
//! runtime, so duplicate suppression and badge counting are tested directly.

use std::collections::{BTreeMap, HashMap};
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
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            max_messages: 100_000,
            message_ttl: Duration::from_secs(15 * 60),
            max_badges: 1_000_000,
        }
    }
}

#[derive(Debug)]
struct Entry {
    options: Arc<PushOptions>,
    at: Instant,
    // Small: a message reaches a few devices of a few users (rooms: one per member pushed).
    pushed_tokens: Vec<Arc<str>>,
    counted: Vec<UserId>,
    acked: Vec<UserId>,
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
    badges: HashMap<UserId, u32>,
}

impl PolicyState {
    pub(crate) fn new(limits: PolicyLimits) -> Self {
        Self {
            limits,
            messages: BTreeMap::new(),
            badges: HashMap::new(),
        }
    }

    /// Remembers a message's push options.
    pub(crate) fn on_message(&mut self, now: Instant, id: MessageId, options: Arc<PushOptions>) {
        self.messages.insert(
            id,
            Entry {
                options,
                at: now,
                pushed_tokens: Vec::new(),
                counted: Vec::new(),
                acked: Vec::new(),
            },
        );
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
        self.badges.get(user).copied().unwrap_or(0)
    }

    /// The pushes that cover `messages` for `user` on `devices`: at most one per (message,
    /// device) ever, one per device per collapse id, badges raised once per message.
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
            // Each message pushed to the user for the first time is one more unread.
            for id in &ids {
                if !per_device.iter().any(|(_, fresh)| fresh.contains(id)) {
                    continue;
                }
                let entry = self.messages.get_mut(id).expect("grouped ids are known");
                if !entry.counted.contains(user) {
                    entry.counted.push(user.clone());
                    self.raise_badge(user);
                }
            }
            let badge = self.badge(user);
            for (device, fresh) in per_device {
                let token: Arc<str> = Arc::from(device.registration.token.as_str());
                for id in &fresh {
                    let entry = self.messages.get_mut(id).expect("grouped ids are known");
                    entry.pushed_tokens.push(Arc::clone(&token));
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
    /// and the badge goes back to zero.
    pub(crate) fn acked(&mut self, user: &UserId, messages: &[MessageId]) {
        for id in messages {
            if let Some(entry) = self.messages.get_mut(id) {
                if !entry.acked.contains(user) {
                    entry.acked.push(user.clone());
                }
            }
        }
        self.badges.remove(user);
    }

    fn raise_badge(&mut self, user: &UserId) {
        if !self.badges.contains_key(user) && self.badges.len() >= self.limits.max_badges {
            // Bounded memory beats an exact badge for a user not heard from in a long time.
            if let Some(victim) = self.badges.keys().next().cloned() {
                self.badges.remove(&victim);
            }
        }
        let badge = self.badges.entry(user.clone()).or_insert(0);
        *badge = badge.saturating_add(1);
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
    fn badges_count_pushed_messages_and_reset_on_ack() {
        let (mut s, now) = state();
        let ann = UserId::new("ann");
        let phone = [device("phone", "aa")];
        let mut badges = Vec::new();
        for id in 1..=3 {
            s.on_message(now, MessageId(id), alert(None));
            let (p, _) = s.plan(&ann, &phone, &[MessageId(id)]);
            badges.push(p[0].badge);
        }
        assert_eq!(badges, [1, 2, 3]);
        s.acked(&ann, &[MessageId(3)]);
        assert_eq!(s.badge(&ann), 0);
        s.on_message(now, MessageId(4), alert(None));
        let (p, _) = s.plan(&ann, &phone, &[MessageId(4)]);
        assert_eq!(p[0].badge, 1);
        // Another user's badge is their own.
        let bob = UserId::new("bob");
        let (p, _) = s.plan(&bob, &[device("phone", "dd")], &[MessageId(4)]);
        assert_eq!(p[0].badge, 1);
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
