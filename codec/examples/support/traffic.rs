//! Deterministic synthetic IM traffic, as real imgate `Frame`s: chat texts in several
//! languages and scripts with emoji, typing and presence events, receipts, acks and pings,
//! media messages and history syncs, with JSON-like application payloads.
//!
//! Used to train the shipped dictionary (`gen_samples`) and to measure it (`dict_ratio`).
//! The same seed always yields the same frames.

use bytes::Bytes;
use imgate_codec::proto::send::To;
use imgate_codec::{Ack, Deliver, Frame, JoinRoom, Ping, Pong, Receipt, RegisterPush, Send};

/// splitmix64: tiny, deterministic, good enough for test data.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub(crate) fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }

    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            self.hex(4),
            self.hex(12)
        )
    }
}

const EN: &[&str] = &[
    "hey",
    "are you",
    "coming",
    "tonight",
    "see you",
    "at",
    "7",
    "lol",
    "ok",
    "sounds good",
    "thanks",
    "did you see",
    "the new",
    "photo",
    "meeting",
    "tomorrow",
    "morning",
    "I'm",
    "running late",
    "sorry",
    "where",
    "are we",
    "meeting",
    "haha",
    "yes",
    "no worries",
    "call me",
    "when you can",
    "just landed",
    "on my way",
    "what time",
    "dinner",
    "weekend",
    "happy birthday",
    "love it",
    "great job",
    "can you",
    "send",
    "the file",
    "please",
];
const ZH: &[&str] = &[
    "你好",
    "在吗",
    "明天",
    "早上",
    "九点",
    "开会",
    "别迟到",
    "好的",
    "谢谢",
    "没问题",
    "我到了",
    "你在哪",
    "晚上",
    "一起",
    "吃饭",
    "吧",
    "哈哈",
    "收到",
    "辛苦了",
    "周末",
    "有空吗",
    "发给我",
    "文件",
    "已经",
    "看到了",
    "生日快乐",
    "路上",
    "堵车",
    "马上",
    "到",
];
const JA: &[&str] = &[
    "こんにちは",
    "了解しました",
    "よろしくお願いします",
    "ありがとう",
    "明日",
    "会議",
    "何時",
    "ですか",
    "今",
    "向かっています",
    "少し遅れます",
    "すみません",
    "大丈夫",
    "写真",
    "送ります",
    "お疲れ様です",
    "週末",
    "空いてる",
    "駅",
    "で待ってるね",
    "笑",
];
const ES: &[&str] = &[
    "hola",
    "¿dónde",
    "quedamos?",
    "mañana",
    "por la tarde",
    "vale",
    "gracias",
    "llego tarde",
    "lo siento",
    "nos vemos",
    "a las",
    "ocho",
    "¿qué tal?",
    "todo bien",
    "jaja",
    "claro",
    "te llamo",
    "luego",
    "feliz cumpleaños",
    "qué bonito",
    "envíame",
    "el archivo",
    "porfa",
];
const RU: &[&str] = &[
    "привет",
    "как дела?",
    "созвонимся",
    "позже",
    "завтра",
    "утром",
    "встреча",
    "в девять",
    "спасибо",
    "хорошо",
    "опаздываю",
    "извини",
    "где ты?",
    "уже еду",
    "ха-ха",
    "конечно",
    "с днём рождения",
    "отправь",
    "файл",
    "пожалуйста",
    "увидимся",
    "вечером",
];
const AR: &[&str] = &[
    "مرحبا",
    "كيف حالك؟",
    "هل وصلت",
    "الرسالة؟",
    "شكرا",
    "نعم",
    "لا",
    "غدا",
    "صباحا",
    "الاجتماع",
    "في التاسعة",
    "أنا في الطريق",
    "آسف",
    "متأخر",
    "حسنا",
    "إن شاء الله",
    "عيد ميلاد سعيد",
    "أرسل",
    "الملف",
    "من فضلك",
    "نلتقي",
    "مساء",
];
const EMOJI: &[&str] = &[
    "😂", "❤️", "👍", "🙏", "😊", "🎉", "🔥", "😭", "👋", "🍕", "✅", "🥳", "😅", "🤔", "💯",
];
const LANGUAGES: &[&[&str]] = &[EN, EN, EN, ZH, ZH, JA, ES, RU, AR];

/// Traffic state: sequence numbers, ids and a clock that move forward.
pub(crate) struct Traffic {
    rng: Rng,
    seq: u64,
    msg_id: u64,
    message_id: u64,
    now_ms: u64,
    users: Vec<String>,
    rooms: Vec<String>,
}

impl Traffic {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let users = (0..200)
            .map(|_| format!("u-{}", rng.range(100_000, 999_999)))
            .collect();
        let rooms = [
            "general",
            "random",
            "family",
            "team-ios",
            "weekend-plans",
            "ops-alerts",
        ]
        .iter()
        .map(|r| format!("room-{r}"))
        .chain((0..40).map(|_| format!("grp-{}", rng.hex(10))))
        .collect();
        Self {
            rng,
            seq: 0,
            msg_id: 0,
            message_id: 1_000_000_000 + seed * 7_919,
            now_ms: 1_700_000_000_000 + seed * 86_400_000,
            users,
            rooms,
        }
    }

    fn user(&mut self) -> String {
        self.users[self.rng.below(self.users.len())].clone()
    }

    fn room(&mut self) -> String {
        self.rooms[self.rng.below(self.rooms.len())].clone()
    }

    fn tick(&mut self) -> u64 {
        self.now_ms += self.rng.range(5, 20_000) as u64;
        self.now_ms
    }

    /// A chat text: a few words of one language, sometimes emoji.
    fn text(&mut self) -> String {
        let words = LANGUAGES[self.rng.below(LANGUAGES.len())];
        let spaced = !(std::ptr::eq(words, ZH) || std::ptr::eq(words, JA));
        let mut text = String::new();
        for i in 0..self.rng.range(1, 9) {
            if i > 0 && spaced {
                text.push(' ');
            }
            text.push_str(self.rng.pick(words));
        }
        for _ in 0..self.rng.range(0, 3).saturating_sub(1) {
            text.push_str(self.rng.pick(EMOJI));
        }
        if self.rng.chance(5) {
            text = format!("{text} https://example.com/s/{}", self.rng.hex(8));
        }
        text
    }

    fn json_str(s: &str) -> String {
        s.replace('\\', "\\\\").replace('"', "\\\"")
    }

    fn text_payload(&mut self) -> String {
        let text = Self::json_str(&self.text());
        let mentions: Vec<String> = (0..self.rng.range(0, 3).saturating_sub(1))
            .map(|_| format!("\"{}\"", self.user()))
            .collect();
        let mut json = format!(
            r#"{{"type":"text","text":"{text}","mentions":[{}],"client_msg_id":"{}""#,
            mentions.join(","),
            self.rng.uuid()
        );
        if self.rng.chance(15) {
            json.push_str(&format!(
                r#","reply_to":"m-{}""#,
                self.rng.range(1_000_000, 9_999_999)
            ));
        }
        if self.rng.chance(8) {
            json.push_str(&format!(
                r#","reactions":{{"{}":{}}}"#,
                self.rng.pick(EMOJI),
                self.rng.range(1, 12)
            ));
        }
        json.push('}');
        json
    }

    fn media_payload(&mut self) -> String {
        let kind = self.rng.pick(&["image", "video", "file", "voice"]);
        let (w, h) = (self.rng.range(320, 4032), self.rng.range(240, 3024));
        let thumb_len = self.rng.range(40, 160);
        format!(
            r#"{{"type":"{kind}","url":"https://cdn.example.com/m/{}/{}.{}","mime":"{}","size":{},"width":{w},"height":{h},"thumb":"data:image/jpeg;base64,{}","caption":"{}","client_msg_id":"{}"}}"#,
            self.rng.hex(2),
            self.rng.hex(24),
            self.rng.pick(&["jpg", "mp4", "pdf", "m4a"]),
            self.rng
                .pick(&["image/jpeg", "video/mp4", "application/pdf", "audio/mp4"]),
            self.rng.range(10_000, 20_000_000),
            self.rng.hex(thumb_len),
            Self::json_str(&self.text()),
            self.rng.uuid(),
        )
    }

    fn typing_payload(&mut self) -> String {
        let state = self.rng.pick(&["started", "stopped"]);
        let (user, room) = (self.user(), self.room());
        format!(r#"{{"type":"typing","state":"{state}","user":"{user}","room":"{room}"}}"#)
    }

    fn presence_payload(&mut self) -> String {
        let status = self.rng.pick(&["online", "away", "offline", "busy"]);
        let (user, seen) = (
            self.user(),
            self.now_ms - self.rng.range(0, 3_600_000) as u64,
        );
        format!(
            r#"{{"type":"presence","user":"{user}","status":"{status}","last_seen":{seen},"device":"{}"}}"#,
            self.rng.pick(&["ios", "android", "web", "desktop"])
        )
    }

    fn read_payload(&mut self) -> String {
        let (user, room) = (self.user(), self.room());
        format!(
            r#"{{"type":"read","user":"{user}","room":"{room}","up_to":"m-{}","at":{}}}"#,
            self.rng.range(1_000_000, 9_999_999),
            self.now_ms
        )
    }

    /// A page of history: a JSON array of earlier messages (the large frames).
    fn history_payload(&mut self) -> String {
        let entries: Vec<String> = (0..self.rng.range(3, 60))
            .map(|_| {
                let body = if self.rng.chance(85) {
                    self.text_payload()
                } else {
                    self.media_payload()
                };
                format!(
                    r#"{{"id":"m-{}","from":"{}","at":{},"body":{body}}}"#,
                    self.rng.range(1_000_000, 9_999_999),
                    self.user(),
                    self.now_ms - self.rng.range(0, 86_400_000) as u64
                )
            })
            .collect();
        format!(
            r#"{{"type":"history","room":"{}","messages":[{}],"has_more":{}}}"#,
            self.room(),
            entries.join(","),
            self.rng.chance(50)
        )
    }

    fn deliver(&mut self, payload: String, in_room: bool) -> Frame {
        self.seq += 1;
        self.message_id += self.rng.range(1, 50) as u64;
        Deliver {
            seq: self.seq,
            payload: Bytes::from(payload),
            from: self.user(),
            room: if in_room { self.room() } else { String::new() },
            message_id: self.message_id,
            sent_at_ms: self.tick(),
        }
        .into()
    }

    /// The next frame of the mix.
    pub(crate) fn next_frame(&mut self) -> Frame {
        let roll = self.rng.below(100);
        match roll {
            0..=39 => {
                let payload = self.text_payload();
                let in_room = self.rng.chance(60);
                self.deliver(payload, in_room)
            }
            40..=51 => {
                self.msg_id += 1;
                let to = if self.rng.chance(60) {
                    To::Room(self.room())
                } else {
                    To::User(self.user())
                };
                Send {
                    msg_id: self.msg_id,
                    to: Some(to),
                    payload: Bytes::from(self.text_payload()),
                    ack: if self.rng.chance(30) { self.seq } else { 0 },
                }
                .into()
            }
            52..=61 => Receipt {
                msg_id: self.msg_id.max(1),
                status: self.rng.range(1, 4) as i32,
                message_id: self.message_id,
                ..Default::default()
            }
            .into(),
            62..=65 => Ack { seq: self.seq }.into(),
            66..=67 => Ping {
                client_time_ms: self.tick(),
                ack: self.seq,
            }
            .into(),
            68..=69 => {
                let t = self.tick();
                Pong {
                    client_time_ms: t,
                    server_time_ms: t + self.rng.range(1, 300) as u64,
                }
                .into()
            }
            70..=79 => {
                let payload = self.typing_payload();
                self.deliver(payload, true)
            }
            80..=87 => {
                let payload = self.presence_payload();
                self.deliver(payload, false)
            }
            88..=91 => {
                let payload = self.read_payload();
                self.deliver(payload, true)
            }
            92..=95 => {
                let payload = self.media_payload();
                let in_room = self.rng.chance(50);
                self.deliver(payload, in_room)
            }
            96..=98 => {
                let payload = self.history_payload();
                self.deliver(payload, true)
            }
            _ => {
                self.msg_id += 1;
                if self.rng.chance(50) {
                    JoinRoom {
                        msg_id: self.msg_id,
                        room: self.room(),
                    }
                    .into()
                } else {
                    RegisterPush {
                        msg_id: self.msg_id,
                        provider: self.rng.range(1, 2) as i32,
                        token: self.rng.hex(64),
                        topic: "com.example.chat".into(),
                        sandbox: self.rng.chance(10),
                    }
                    .into()
                }
            }
        }
    }
}
