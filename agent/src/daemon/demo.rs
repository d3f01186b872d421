//! The demo (`agent run` with no config): the embedded config keeps two stores under
//! ./icsync-demo in sync. On the first run the "laptop" store is created and filled the way an
//! application would fill it — plain SQL on the public tables — with a small folder tree and a
//! few hundred messages, so the first session has something to carry to the "server".

use std::path::{Path, PathBuf};

use rusqlite::params;
use shared::store::{Store, StoreError};
use tracing::info;

use super::schedule::Jitter;
use crate::config::Config;

/// The store the demo fills.
pub const DEMO_STORE: &str = "laptop";
/// How many messages the demo store starts with.
pub const DEMO_MESSAGES: usize = 300;

/// Why the demo store could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create the demo store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the demo store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot fill the demo store {path}: {source}")]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// Creates and fills the demo's laptop store if it does not exist yet, then says where the
/// demo lives and how to play with it. Returns whether a store was created.
pub fn prepare(config: &Config) -> Result<bool, DemoError> {
    let Some(laptop) = config.store(DEMO_STORE).and_then(|s| s.path.clone()) else {
        return Ok(false);
    };
    let created = if laptop.exists() {
        false
    } else {
        create(&laptop)?;
        true
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let shown = laptop
        .strip_prefix(&cwd)
        .unwrap_or(&laptop)
        .display()
        .to_string();
    info!(
        dir = %config.base_dir.display(),
        laptop = %shown,
        created,
        "demo: the agent keeps two stores in sync; change one with any SQLite client and watch the next session carry it over"
    );
    info!(
        hint = %format!(
            "sqlite3 {shown} \"UPDATE messages SET is_read = 1 WHERE folder_id = (SELECT id FROM folders WHERE name = 'Inbox')\""
        ),
        "demo: try"
    );
    Ok(created)
}

/// Fills a new store at a temporary name and renames it into place, so a demo interrupted half
/// way is started over rather than left half filled.
fn create(path: &Path) -> Result<(), DemoError> {
    let io = |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".filling");
    let tmp = PathBuf::from(tmp);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut leftover = tmp.as_os_str().to_owned();
        leftover.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(leftover));
    }
    {
        let store = Store::open(&tmp)?;
        fill(&store).map_err(|source| DemoError::Sql {
            path: path.to_path_buf(),
            source,
        })?;
        // Closing the last connection checkpoints the WAL into the file.
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    info!(
        store = %path.display(),
        messages = DEMO_MESSAGES,
        "demo: created the laptop store"
    );
    Ok(())
}

const FOLDERS: &[(&str, Option<&str>)] = &[
    ("Inbox", None),
    ("Projects", Some("Inbox")),
    ("Receipts", Some("Inbox")),
    ("Newsletters", Some("Inbox")),
    ("Archive", None),
    ("2024", Some("Archive")),
    ("Sent", None),
    ("Drafts", None),
];

const SENDERS: &[&str] = &[
    "Ada Lovelace <ada@analytical.example>",
    "Grace Hopper <grace@cobol.example>",
    "Alan Turing <alan@bletchley.example>",
    "Edsger Dijkstra <ewd@eindhoven.example>",
    "Barbara Liskov <liskov@clu.example>",
    "Donald Knuth <knuth@taocp.example>",
    "Frances Allen <fran@ibm.example>",
    "Ken Thompson <ken@bell-labs.example>",
    "Margaret Hamilton <margaret@apollo.example>",
    "Leslie Lamport <lamport@paxos.example>",
    "The Build Bot <ci@builds.example>",
    "Weekly Digest <digest@news.example>",
];

const TOPICS: &[&str] = &[
    "quarterly report",
    "release 2.4",
    "offsite agenda",
    "the replication bug",
    "budget review",
    "conference travel",
    "design doc feedback",
    "on-call handover",
    "your invoice",
    "team lunch",
    "the migration plan",
    "weekly digest",
];

const FORMS: &[&str] = &[
    "Re: {}",
    "Fwd: {}",
    "Question about {}",
    "Notes on {}",
    "Reminder: {}",
    "{} (updated)",
    "Draft: {}",
    "Thoughts on {}",
];

const SENTENCES: &[&str] = &[
    "Thanks for sending this over so quickly; I had a first look this morning.",
    "I think we should keep the scope small and ship the first part next week.",
    "The numbers in the second table do not add up, could you check them again?",
    "Let's discuss the open questions in Thursday's meeting rather than by mail.",
    "I have attached the latest version with the changes we agreed on yesterday.",
    "Nothing here is urgent, but it would help to have an answer before Friday.",
    "The test run from last night failed twice on the same step, which is new.",
    "We moved the deadline by two days to leave room for the review.",
    "Please forward this to anyone on the team who might have an opinion.",
    "I agree with most of it; my only concern is how we handle the old data.",
    "Could you add a short summary at the top for people who only skim it?",
    "The vendor confirmed the order and the delivery should arrive on Monday.",
];

/// The folder tree and the messages, in one transaction, through the public tables only.
fn fill(store: &Store) -> Result<(), rusqlite::Error> {
    let tx = store.connection().unchecked_transaction()?;
    let mut ids: Vec<(&str, String)> = Vec::new();
    for (name, parent) in FOLDERS {
        let parent_id =
            parent.and_then(|p| ids.iter().find(|(n, _)| *n == p).map(|(_, id)| id.clone()));
        let id: String = tx.query_row(
            "INSERT INTO folders (parent_id, name) VALUES (?1, ?2) RETURNING id",
            params![parent_id, name],
            |r| r.get(0),
        )?;
        ids.push((name, id));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Fixed seed: every demo starts with the same mail.
    let mut rng = Jitter::seeded(2004);
    let mut pick = |n: usize| ((rng.next_f64() * n as f64) as usize).min(n.saturating_sub(1));
    let mut insert = tx.prepare(
        "INSERT INTO messages (folder_id, subject, sender, received_at, headers, body, is_read)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for i in 0..DEMO_MESSAGES {
        let (folder, folder_id) = &ids[pick(ids.len())];
        let topic = TOPICS[pick(TOPICS.len())];
        let subject = FORMS[pick(FORMS.len())].replace("{}", topic);
        let sender = if *folder == "Sent" || *folder == "Drafts" {
            "Me <me@laptop.example>"
        } else {
            SENDERS[pick(SENDERS.len())]
        };
        // Spread over the last 60 days, newest last.
        let received_at = now - ((DEMO_MESSAGES - i) as i64 * 17_280) - pick(3600) as i64;
        let headers = format!(
            "From: {sender}\r\nTo: me@laptop.example\r\nSubject: {subject}\r\nMessage-ID: <demo-{i}@icsync.example>\r\n"
        );
        let target = 1024 + pick(1024);
        let mut body = String::from("Hi,\n\n");
        while body.len() < target {
            body.push_str(SENTENCES[pick(SENTENCES.len())]);
            body.push(if pick(4) == 0 { '\n' } else { ' ' });
        }
        body.push_str("\n\nBest regards\n");
        let is_read = *folder != "Inbox" || pick(3) == 0;
        insert.execute(params![
            folder_id,
            subject,
            sender,
            received_at,
            headers,
            body.as_bytes(),
            is_read
        ])?;
    }
    drop(insert);
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{DEMO_CONFIG, DEMO_DIR};
    use crate::config::EMBEDDED_ORIGIN;

    #[test]
    fn the_demo_store_is_created_once_and_filled_like_an_application_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join(DEMO_DIR);
        let config = Config::parse(DEMO_CONFIG, EMBEDDED_ORIGIN, &base).expect("demo config");
        assert!(prepare(&config).expect("prepared"));
        let path = base.join("data/laptop.db");
        let store = Store::open(&path).expect("a store");
        let counts = store.counts().expect("counts");
        assert_eq!(counts.folders, FOLDERS.len() as u64);
        assert_eq!(counts.messages, DEMO_MESSAGES as u64);
        assert_eq!(counts.tombstones, 0);
        // Every row change took one tick: the tracking triggers saw the inserts.
        assert_eq!(
            store.tick().expect("tick"),
            (FOLDERS.len() + DEMO_MESSAGES) as u64
        );
        let conn = store.connection();
        let (min, max): (i64, i64) = conn
            .query_row(
                "SELECT min(length(body)), max(length(body)) FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("sizes");
        assert!(min >= 1024 && max <= 2300, "{min}..{max}");
        let (read, unread, subjects, senders, folders_used): (i64, i64, i64, i64, i64) = conn
            .query_row(
                "SELECT sum(is_read), sum(1 - is_read), count(DISTINCT subject),
                        count(DISTINCT sender), count(DISTINCT folder_id) FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .expect("variety");
        assert!(read > 0 && unread > 0, "{read} read, {unread} unread");
        assert!(subjects > 40, "{subjects}");
        assert!(senders > 8, "{senders}");
        assert_eq!(folders_used, FOLDERS.len() as i64);
        let nested: i64 = conn
            .query_row(
                "SELECT count(*) FROM folders f JOIN folders p ON f.parent_id = p.id WHERE p.name = 'Inbox'",
                [],
                |r| r.get(0),
            )
            .expect("tree");
        assert_eq!(nested, 3);
        drop(store);
        assert!(!base.join("data/laptop.db.filling").exists());

        // Already there: left alone.
        assert!(!prepare(&config).expect("prepared again"));
        let store = Store::open(&path).expect("a store");
        assert_eq!(
            store.counts().expect("counts").messages,
            DEMO_MESSAGES as u64
        );
    }

    #[test]
    fn a_config_without_a_laptop_store_has_nothing_to_prepare() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::parse(
            "state = \"a.db\"\n[stores.x]\nsynchronizer = \"s\"\ncollector = \"c\"\n",
            EMBEDDED_ORIGIN,
            dir.path(),
        )
        .expect("config");
        assert!(!prepare(&config).expect("nothing to do"));
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
