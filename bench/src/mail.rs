//! The benchmark's mail: a deterministic stream of realistic messages of about 2 KiB each
//! (RFC 5322 headers with a `Received` trace, a text body of ordinary sentences), spread over a
//! tree of ten folders. The same seed gives the same messages, so the source store and the raw
//! insert that measures the limit hold byte-for-byte the same rows.

/// The ten folders: (name, parent name), parents first. Weights say how much mail each gets.
pub const FOLDERS: &[(&str, Option<&str>, u32)] = &[
    ("Inbox", None, 30),
    ("Projects", Some("Inbox"), 12),
    ("Receipts", Some("Inbox"), 5),
    ("Newsletters", Some("Inbox"), 10),
    ("Notifications", Some("Inbox"), 8),
    ("Archive", None, 15),
    ("2024", Some("Archive"), 8),
    ("2025", Some("Archive"), 6),
    ("Sent", None, 5),
    ("Drafts", None, 1),
];

const PEOPLE: &[(&str, &str)] = &[
    ("Ines Albrecht", "ines.albrecht@harbour.example"),
    ("Tomás Ferreira", "tomas@lisbon-labs.example"),
    ("Mei Chen", "mei.chen@northwind.example"),
    ("Olusegun Adeyemi", "segun@lagos-logistics.example"),
    ("Freya Lindqvist", "freya@fjord.example"),
    ("Rahul Mehta", "rahul.mehta@monsoon.example"),
    ("Claire Dubois", "claire@atelier.example"),
    ("Jonas Weber", "jonas.weber@werkstatt.example"),
    ("Aiko Tanaka", "aiko@kyoto-works.example"),
    ("Sam Okafor", "sam@okafor-consulting.example"),
    ("Deploy Robot", "deploy@pipeline.example"),
    ("Monthly Bulletin", "bulletin@newsroom.example"),
    ("Accounts Payable", "ap@ledger.example"),
    ("Helpdesk", "support@tickets.example"),
];

const TOPICS: &[&str] = &[
    "the spring catalogue",
    "warehouse inventory",
    "ticket 4711",
    "the supplier contract",
    "Q3 forecast",
    "the new office lease",
    "API rate limits",
    "the translation backlog",
    "March payroll",
    "the board meeting",
    "server room cooling",
    "the onboarding checklist",
    "shipping delays",
    "the customer survey",
    "disk usage alerts",
    "the style guide",
];

const FORMS: &[&str] = &[
    "Re: {}",
    "Fwd: {}",
    "Update on {}",
    "Minutes: {}",
    "Follow-up: {}",
    "{} - second draft",
    "Quick question on {}",
    "FYI: {}",
    "Re: Re: {}",
    "Action required: {}",
];

const SENTENCES: &[&str] = &[
    "As promised, here is the summary of where things stand after this week.",
    "The figures for the northern region arrived late, so the totals are provisional.",
    "Could you confirm the delivery address before we place the final order?",
    "I spoke with the supplier this morning and they can move the date forward.",
    "The previous version is still in the shared folder if you need to compare.",
    "Two of the checks are failing on the build server since the last merge.",
    "Please treat the attached numbers as confidential until the announcement.",
    "We are short one reviewer, so the schedule may slip by a few days.",
    "The room is booked from ten to twelve, with coffee arranged for eleven.",
    "Let me know whether the proposal works for your team or needs changes.",
    "The invoice total includes the shipping costs we discussed on the phone.",
    "I added comments inline; most of them are small wording suggestions.",
    "Once the migration finishes we will switch the old endpoint off for good.",
    "If anything in the plan is unclear, I am happy to walk you through it.",
    "Die Unterlagen schicke ich Ihnen bis Ende der Woche zu.",
    "Monitoring shows the queue draining normally again since half past three.",
];

/// 2024-01-01T00:00:00Z: the mail spreads over the two years after it.
const EPOCH: i64 = 1_704_067_200;

/// One generated message, in the columns of the store's `messages` table (`folder` is an index
/// into [`FOLDERS`]).
#[derive(Clone, Debug)]
pub struct Mail {
    pub id: String,
    pub folder: usize,
    pub subject: String,
    pub sender: String,
    pub received_at: i64,
    pub headers: String,
    pub body: String,
    pub is_read: bool,
}

impl Mail {
    /// The bytes of message data the row carries (what the MB/s figures count).
    pub fn data_len(&self) -> usize {
        self.id.len()
            + self.subject.len()
            + self.sender.len()
            + self.headers.len()
            + self.body.len()
            + 8
    }
}

/// A small deterministic generator (splitmix64): the same seed, the same mail on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// 128 random bits as 32 lower-case hex digits (a version-4 UUID's entropy).
    pub fn id(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }
}

/// How the application that fills the source store names its messages. The store takes any id
/// the application gives (PRODUCT.md); what differs is where a new id lands in `messages`' id
/// index, at the destination as at the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ids {
    /// Exchange's source keys (seed 000's store; MAPI's `SKEY`): the GUID of the store that
    /// made the item, then its 6-byte global counter, big-endian, as 44 hex digits. A store's
    /// later items have larger ids, so new ones land at the index's end.
    Exchange,
    /// 128 random bits, 32 hex digits: no order at all, so every batch of new messages lands
    /// all over the index. The worst case for any B-tree.
    Random,
}

impl Ids {
    pub fn name(self) -> &'static str {
        match self {
            Ids::Exchange => "exchange",
            Ids::Random => "random",
        }
    }
}

/// The GUID of the store the benchmark's application writes to (the prefix of its Exchange ids).
const STORE_GUID: &str = "9b2e6f0c4d1a4e7b8c3f5a2d6e9b1c07";

/// The endless stream of messages of one seed. Message `n` (0-based) is received at a time that
/// grows with `n`, as mail does.
pub struct MailStream {
    rng: Rng,
    n: u64,
    folder_weights: u32,
    ids: Ids,
    /// The global counter of the next Exchange id.
    counter: u64,
}

impl MailStream {
    /// The stream of `seed`, its ids of form `ids`; Exchange ids count from 1.
    pub fn new(seed: u64, ids: Ids) -> MailStream {
        MailStream {
            rng: Rng::new(seed),
            n: 0,
            folder_weights: FOLDERS.iter().map(|f| f.2).sum(),
            ids,
            counter: 1,
        }
    }

    /// The same stream, its Exchange ids counting from `first` (a store's counter only grows).
    pub fn counting_from(mut self, first: u64) -> MailStream {
        self.counter = first;
        self
    }

    /// The next message's id. The random draw is made for both forms, so the rest of the
    /// stream (folders, subjects, bodies) is the same whichever form the ids take.
    fn next_id(&mut self) -> String {
        let random = self.rng.id();
        match self.ids {
            Ids::Random => random,
            Ids::Exchange => {
                let counter = self.counter & 0xFFFF_FFFF_FFFF;
                self.counter += 1;
                format!("{STORE_GUID}{counter:012x}")
            }
        }
    }

    fn folder(&mut self) -> usize {
        let mut w = self.rng.below(self.folder_weights as usize) as u32;
        for (i, f) in FOLDERS.iter().enumerate() {
            if w < f.2 {
                return i;
            }
            w -= f.2;
        }
        0
    }

    /// A body of about `target` bytes of sentences in paragraphs.
    pub fn body(&mut self, greeting: &str, target: usize) -> String {
        let mut body = format!("Hi {greeting},\n\n");
        while body.len() < target {
            body.push_str(self.rng.pick(SENTENCES));
            body.push(if self.rng.below(4) == 0 { '\n' } else { ' ' });
        }
        body.push_str("\n\nBest regards\n-- \nSent from the benchmark\n");
        body
    }

    /// A subject line.
    pub fn subject(&mut self) -> String {
        let form = self.rng.pick(FORMS);
        form.replace("{}", self.rng.pick(TOPICS))
    }
}

impl Iterator for MailStream {
    type Item = Mail;

    fn next(&mut self) -> Option<Mail> {
        let n = self.n;
        self.n += 1;
        let id = self.next_id();
        let folder = self.folder();
        let outgoing = matches!(FOLDERS[folder].0, "Sent" | "Drafts");
        let (from_name, from_addr) = if outgoing {
            ("Me", "me@laptop.example")
        } else {
            self.rng.pick(PEOPLE)
        };
        let (to_name, to_addr) = if outgoing {
            self.rng.pick(PEOPLE)
        } else {
            ("Me", "me@laptop.example")
        };
        let subject = self.subject();
        let sender = format!("{from_name} <{from_addr}>");
        // About 15 messages an hour, with a little jitter.
        let received_at = EPOCH + n as i64 * 240 + self.rng.below(240) as i64;
        let host = from_addr.split('@').nth(1).unwrap_or("example");
        let relay = self.rng.below(250) + 2;
        let message_id = format!("<{:x}.{n}@{host}>", self.rng.next_u64());
        let date = rfc5322_date(received_at);
        let reply = if subject.starts_with("Re:") {
            format!(
                "In-Reply-To: <{:x}@{host}>\r\nReferences: <{:x}@{host}>\r\n",
                self.rng.next_u64(),
                self.rng.next_u64()
            )
        } else {
            String::new()
        };
        let headers = format!(
            "Return-Path: <{from_addr}>\r\n\
             Received: from mail.{host} (mail.{host} [192.0.2.{relay}])\r\n\tby mx.laptop.example with ESMTPS id {:x}\r\n\tfor <{to_addr}>; {date}\r\n\
             From: {sender}\r\n\
             To: {to_name} <{to_addr}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: {message_id}\r\n\
             {reply}\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n",
            self.rng.next_u64()
        );
        // Headers are ~600 bytes; the body makes the message about 2 KiB.
        let target = 1000 + self.rng.below(700);
        let body = self.body(to_name, target);
        let is_read = FOLDERS[folder].0 != "Inbox" || self.rng.below(3) == 0;
        Some(Mail {
            id,
            folder,
            subject,
            sender,
            received_at,
            headers,
            body,
            is_read,
        })
    }
}

/// `Mon, 1 Jan 2024 00:00:00 +0000` for unix seconds.
pub fn rfc5322_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc2822()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_mail_starts_in_2024_with_rfc5322_dates() {
        assert_eq!(rfc5322_date(EPOCH), "Mon, 1 Jan 2024 00:00:00 +0000");
        let first = MailStream::new(1, Ids::Exchange).next().expect("a message");
        assert!(
            first.headers.contains("\r\nDate: Mon, 1 Jan 2024 00:0"),
            "{}",
            first.headers
        );
    }

    #[test]
    fn the_stream_is_deterministic_and_about_two_kib_a_message() {
        let a: Vec<Mail> = MailStream::new(7, Ids::Random).take(2000).collect();
        let b: Vec<Mail> = MailStream::new(7, Ids::Random).take(2000).collect();
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.id == y.id && x.body == y.body));
        let mean = a.iter().map(Mail::data_len).sum::<usize>() / a.len();
        assert!((1800..=2400).contains(&mean), "mean message size {mean}");
        let folders: std::collections::HashSet<usize> = a.iter().map(|m| m.folder).collect();
        assert_eq!(folders.len(), FOLDERS.len());
        let ids: std::collections::HashSet<&str> = a.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), a.len());
    }

    /// Exchange ids: the store's GUID and a growing counter, so they sort in the order the
    /// messages were made; a later stream of the same store counts on. Only the ids differ
    /// between the two forms.
    #[test]
    fn exchange_ids_grow_with_the_stream_and_leave_the_rest_as_it_is() {
        let exchange: Vec<Mail> = MailStream::new(7, Ids::Exchange).take(300).collect();
        let random: Vec<Mail> = MailStream::new(7, Ids::Random).take(300).collect();
        assert_eq!(exchange[0].id, format!("{STORE_GUID}000000000001"));
        assert!(exchange.iter().all(|m| m.id.len() == 44));
        assert!(exchange.windows(2).all(|w| w[0].id < w[1].id));
        assert!(exchange.iter().zip(&random).all(|(e, r)| e.id != r.id
            && (e.folder, &e.subject, &e.headers, &e.body)
                == (r.folder, &r.subject, &r.headers, &r.body)));
        assert!(!random.windows(2).all(|w| w[0].id < w[1].id));
        let later = MailStream::new(8, Ids::Exchange)
            .counting_from(301)
            .next()
            .unwrap();
        assert!(later.id > exchange[299].id);
    }
}
