//! The `dynamic_resources` files as the control loop watches them: per file its source, which file
//! its path named when last read, the last good text, and Envoy's update stats. Envoy picks up a
//! file when one is moved into place (an atomic rename; with `watched_directory`, a ConfigMap's
//! `..data` swap); both give the path a new inode, so polling the path's identity (device, inode,
//! change time, following symlinks) on the config check sees exactly such replacements, and an
//! unchanged path is never read again. Owns no parsing (the config module judges a file's text)
//! and no applying (the control loop builds the snapshot).

use crate::admin::SubscriptionStats;
use crate::config::dynamic::{DocText, DocTexts};
use crate::config::{Doc, PathSource, Xds};
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which file a path names: a rename into place changes it, reading does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    /// An inode number freed by one rename can be reused by the next file; its change time
    /// still differs.
    ctime: (i64, i64),
}

fn identity(path: &std::path::Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity { dev: m.dev(), ino: m.ino(), ctime: (m.ctime(), m.ctime_nsec()) })
}

/// One subscription: a resource file and what became of its updates.
#[derive(Debug)]
struct Sub {
    doc: Doc,
    source: PathSource,
    /// The file last read at the path (None: not read yet, or missing then).
    seen: Option<Identity>,
    /// The text last applied.
    good: Option<DocText>,
    stats: SubscriptionStats,
}

/// Every configured resource file, in Envoy's fetch order (clusters, then listeners).
#[derive(Debug, Default)]
pub struct Files {
    subs: Vec<Sub>,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Files {
    pub fn new(xds: &Xds) -> Files {
        let mut files = Files::default();
        files.reconfigure(xds);
        files
    }

    /// Follows a reloaded bootstrap: a file whose source is unchanged keeps its state; a new or
    /// moved one starts afresh and is read at the next check.
    pub fn reconfigure(&mut self, xds: &Xds) {
        let mut old = std::mem::take(&mut self.subs);
        for doc in Doc::ALL {
            let Some(source) = xds.source(doc) else { continue };
            match old.iter().position(|s| s.doc == doc && s.source == *source) {
                Some(i) => self.subs.push(old.swap_remove(i)),
                None => self.subs.push(Sub {
                    doc,
                    source: source.clone(),
                    seen: None,
                    good: None,
                    stats: SubscriptionStats {
                        prefix: doc.stat_prefix(),
                        config_reload: (doc == Doc::Cds).then_some((0, 0)),
                        ..SubscriptionStats::default()
                    },
                }),
            }
        }
    }

    /// The last good text of each file that `xds` still names at the same path.
    pub fn good_for(&self, xds: &Xds) -> DocTexts {
        let mut docs = DocTexts::default();
        for s in &self.subs {
            if xds.source(s.doc) == Some(&s.source) {
                docs.set(s.doc, s.good.clone());
            }
        }
        docs
    }

    /// The first file (in fetch order) whose path names another file than at its last read,
    /// read now: an update attempt. Err carries why it could not be read.
    pub fn next_update(&mut self) -> Option<(Doc, Result<DocText, String>)> {
        let sub = self.subs.iter_mut().find(|s| {
            let now = identity(&s.source.path);
            // A file that disappeared is no update (Envoy keeps its resources too).
            now.is_some() && now != s.seen
        })?;
        sub.seen = identity(&sub.source.path);
        sub.stats.update_attempt += 1;
        let origin = sub.source.path.display().to_string();
        let read = std::fs::read_to_string(&sub.source.path)
            .map(|text| DocText { origin: origin.clone(), text, received: SystemTime::now() })
            .map_err(|e| format!("{origin}: {e}"));
        Some((sub.doc, read))
    }

    /// `doc`'s update was applied; `changed` says whether any resource differs from before.
    pub fn succeeded(&mut self, doc: Doc, text: DocText, version_info: &str, changed: bool) {
        let Some(sub) = self.subs.iter_mut().find(|s| s.doc == doc) else { return };
        let now = millis(text.received);
        sub.good = Some(text);
        sub.stats.update_success += 1;
        sub.stats.update_time = now;
        sub.stats.version = xxhash_rust::xxh64::xxh64(version_info.as_bytes(), 0);
        if let Some((reloads, at)) = sub.stats.config_reload.as_mut() {
            if changed {
                *reloads += 1;
                *at = now;
            }
        }
    }

    /// `doc`'s update was not applied: it did not parse (`update_failure`) or was invalid
    /// (`update_rejected`).
    pub fn failed(&mut self, doc: Doc, parse_failure: bool) {
        let Some(sub) = self.subs.iter_mut().find(|s| s.doc == doc) else { return };
        if parse_failure {
            sub.stats.update_failure += 1;
        } else {
            sub.stats.update_rejected += 1;
        }
    }

    pub fn stats(&self) -> Vec<SubscriptionStats> {
        self.subs.iter().map(|s| s.stats.clone()).collect()
    }
}
