//! A partnership's *scope*: which folders its destination receives, and whether with bodies.
//! Pure data, no I/O.
//!
//! Seed 001 filters an enumeration with a callback asked "before an item is added to the change
//! batch"; here the question is answered by folder path. `folders = ["Inbox", "Projects/**"]`
//! keeps the destination to those subtrees: a pattern is a path of folder names joined by `/`,
//! where `*` stands for any one name and `**` for any number of names, none included. A message
//! is in scope when its folder's path matches a pattern. A folder is in scope when its path
//! matches, or when it is an ancestor a matching folder needs (`Work` for `Work/Projects/**`):
//! the destination holds the hierarchy down to what it receives, and no messages of ancestors.
//!
//! `bodies = false` is seed 002's header download: messages travel without their bodies, and a
//! later scope with bodies fills them in.

use serde::{Deserialize, Serialize};

/// What one direction of a partnership carries to its destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Folder patterns; `None`: every folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folders: Option<Vec<String>>,
    /// Whether message bodies travel.
    pub bodies: bool,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            folders: None,
            bodies: true,
        }
    }
}

impl Scope {
    /// Whether the scope holds everything: an unfiltered session.
    pub fn is_everything(&self) -> bool {
        self.folders.is_none() && self.bodies
    }

    /// The patterns, parsed; or what is wrong with the first bad one.
    pub fn patterns(&self) -> Result<Vec<FolderPattern>, String> {
        match &self.folders {
            None => Ok(Vec::new()),
            Some(list) if list.is_empty() => {
                Err("folders = [] would synchronize nothing; list folder patterns".into())
            }
            Some(list) => list.iter().map(|p| FolderPattern::parse(p)).collect(),
        }
    }

    /// The key a destination files its scoped knowledge under: equal scopes, equal keys; any
    /// change of the scope starts a new record (the destination knows nothing yet through it).
    pub fn key(&self) -> String {
        let mut folders: Vec<&str> = match &self.folders {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => vec!["**"],
        };
        folders.sort_unstable();
        folders.dedup();
        format!(
            "folders={};bodies={}",
            serde_json::to_string(&folders).unwrap_or_default(),
            self.bodies
        )
    }
}

/// One segment of a folder pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Name(String),
    /// `*`: any one folder name.
    One,
    /// `**`: any number of folder names, none included.
    Any,
}

/// A parsed folder pattern, e.g. `Projects/**`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderPattern {
    segments: Vec<Segment>,
}

/// Where a folder stands towards a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Membership {
    /// Neither its messages nor the folder travel.
    Out,
    /// The folder travels, as the way down to folders that match; its messages do not.
    Ancestor,
    /// The folder and its messages travel.
    Matched,
}

impl FolderPattern {
    /// Parses a pattern; an empty one, or one with an empty name (`a//b`), is refused.
    pub fn parse(pattern: &str) -> Result<FolderPattern, String> {
        let trimmed = pattern.trim_matches('/');
        if trimmed.trim().is_empty() {
            return Err(format!("folder pattern {pattern:?} is empty"));
        }
        let segments = trimmed
            .split('/')
            .map(|s| match s {
                "" => Err(format!(
                    "folder pattern {pattern:?} has an empty folder name"
                )),
                "*" => Ok(Segment::One),
                "**" => Ok(Segment::Any),
                name => Ok(Segment::Name(name.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FolderPattern { segments })
    }

    /// Where the folder at `path` (its names from the top) stands towards this pattern.
    pub fn membership(&self, path: &[&str]) -> Membership {
        walk(&self.segments, path)
    }
}

/// Where a folder at `path` stands towards every pattern: the best of them.
pub fn membership(patterns: &[FolderPattern], path: &[&str]) -> Membership {
    patterns
        .iter()
        .map(|p| p.membership(path))
        .max()
        .unwrap_or(Membership::Out)
}

fn walk(pattern: &[Segment], path: &[&str]) -> Membership {
    let Some((first, rest)) = pattern.split_first() else {
        return if path.is_empty() {
            Membership::Matched
        } else {
            Membership::Out
        };
    };
    let Some((name, below)) = path.split_first() else {
        // The path ends inside the pattern: it matches if what is left can match nothing,
        // and is otherwise on the way down to what matches.
        return if pattern.iter().all(|s| *s == Segment::Any) {
            Membership::Matched
        } else {
            Membership::Ancestor
        };
    };
    match first {
        Segment::Name(n) if n == name => walk(rest, below),
        Segment::Name(_) => Membership::Out,
        Segment::One => walk(rest, below),
        Segment::Any => walk(rest, path).max(walk(pattern, below)),
    }
}

#[cfg(test)]
mod tests {
    use super::Membership::{Ancestor, Matched, Out};
    use super::*;

    fn of(patterns: &[&str], path: &str) -> Membership {
        let patterns: Vec<FolderPattern> = patterns
            .iter()
            .map(|p| FolderPattern::parse(p).expect("pattern"))
            .collect();
        let path: Vec<&str> = path.split('/').collect();
        membership(&patterns, &path)
    }

    #[test]
    fn the_issue_example_keeps_inbox_and_the_projects_subtree() {
        let p = ["Inbox", "Projects/**"];
        for (path, want) in [
            ("Inbox", Matched),
            ("Inbox/Sub", Out),
            ("Projects", Matched),
            ("Projects/a", Matched),
            ("Projects/a/b/c", Matched),
            ("Archive", Out),
            ("Archive/Projects", Out),
            ("Inboxes", Out),
        ] {
            assert_eq!(of(&p, path), want, "{path}");
        }
    }

    #[test]
    fn ancestors_of_deeper_patterns_travel_without_their_messages() {
        for (pattern, path, want) in [
            ("Work/Projects/**", "Work", Ancestor),
            ("Work/Projects/**", "Work/Projects", Matched),
            ("Work/Projects/**", "Work/Other", Out),
            ("Work/*/Reports", "Work/x", Ancestor),
            ("Work/*/Reports", "Work/x/Reports", Matched),
            ("Work/*/Reports", "Work/x/Reports/y", Out),
            ("**/Reports", "a", Ancestor),
            ("**/Reports", "a/b/Reports", Matched),
            ("**", "anything/at/all", Matched),
            ("*", "top", Matched),
            ("*", "top/below", Out),
        ] {
            assert_eq!(of(&[pattern], path), want, "{pattern} on {path}");
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in ["", "/", "a//b", "  "] {
            let e = FolderPattern::parse(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let scope = Scope {
            folders: Some(vec![]),
            bodies: true,
        };
        assert!(scope.patterns().is_err());
    }

    #[test]
    fn equal_scopes_share_a_key_and_any_change_makes_a_new_one() {
        let a = Scope {
            folders: Some(vec!["Projects/**".into(), "Inbox".into()]),
            bodies: true,
        };
        let b = Scope {
            folders: Some(vec!["Inbox".into(), "Projects/**".into(), "Inbox".into()]),
            bodies: true,
        };
        assert_eq!(a.key(), b.key());
        let headers = Scope {
            bodies: false,
            ..a.clone()
        };
        assert_ne!(a.key(), headers.key());
        let wider = Scope {
            folders: Some(vec!["Inbox".into(), "Projects/**".into(), "Archive".into()]),
            bodies: true,
        };
        assert_ne!(a.key(), wider.key());
        assert!(Scope::default().is_everything());
        assert!(!a.is_everything());
    }
}
