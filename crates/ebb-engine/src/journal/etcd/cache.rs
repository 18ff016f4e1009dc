//! The records of the pool this process holds the lock of, in memory.
//!
//! While a run holds the pool's lease it is the only writer under the pool's prefix: every
//! other writer's transaction compares the lock key and fails. So what it wrote, and what it
//! read since it took the lock, is what etcd holds, and reading it again would only cost a
//! round trip. The cache is on from the moment the lock is taken until it is released, lost
//! or a write fails (then etcd is asked again).

use std::collections::BTreeMap;

/// Values by key, and the prefixes whose every key is known.
#[derive(Default)]
pub(super) struct Cache {
    on: bool,
    kv: BTreeMap<String, Vec<u8>>,
    /// Prefixes read (or created) whole: a key under one that is not in `kv` is absent.
    complete: Vec<String>,
}

impl Cache {
    /// Starts empty (the lock was just taken: what a previous holder wrote is read anew).
    pub fn start(&mut self) {
        *self = Cache {
            on: true,
            ..Cache::default()
        };
    }

    /// Forgets everything and stays off until the next [`Cache::start`].
    pub fn stop(&mut self) {
        *self = Cache::default();
    }

    /// Whether it answers at all.
    pub fn on(&self) -> bool {
        self.on
    }

    fn covered(&self, key: &str) -> bool {
        self.complete.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// `Some(Some(value))`, `Some(None)` when known to be absent, `None` when unknown.
    pub fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
        if !self.on {
            return None;
        }
        match self.kv.get(key) {
            Some(v) => Some(Some(v.clone())),
            None => self.covered(key).then_some(None),
        }
    }

    /// Every (key, value) under `prefix` in key order, if the prefix is known whole.
    pub fn scan(&self, prefix: &str) -> Option<Vec<(String, Vec<u8>)>> {
        if !self.on || !self.covered(prefix) {
            return None;
        }
        Some(
            self.kv
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Records that `entries` are everything under `prefix`.
    pub fn fill(&mut self, prefix: &str, entries: &[(String, Vec<u8>)]) {
        if !self.on {
            return;
        }
        for (k, v) in entries {
            self.kv.insert(k.clone(), v.clone());
        }
        self.known_whole(prefix);
    }

    /// Records that nothing under `prefix` exists but what is in the cache (a run this
    /// process just created has no actions, owed undos or samples yet).
    pub fn known_whole(&mut self, prefix: &str) {
        if self.on && !self.covered(prefix) {
            self.complete.push(prefix.to_string());
        }
    }

    /// A value read, written (`Some`) or deleted (`None`).
    pub fn set(&mut self, key: &str, value: Option<&[u8]>) {
        if !self.on {
            return;
        }
        match value {
            Some(v) => {
                self.kv.insert(key.to_string(), v.to_vec());
            }
            None => {
                self.kv.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_what_it_knows_and_only_while_on() {
        let mut c = Cache::default();
        c.set("/p/member/1/a", Some(b"x"));
        assert_eq!(c.get("/p/member/1/a"), None, "off: knows nothing");
        c.start();
        c.set("/p/run/1", Some(b"r"));
        assert_eq!(c.get("/p/run/1"), Some(Some(b"r".to_vec())));
        assert_eq!(c.get("/p/run/2"), None, "unknown, not absent");
        c.fill(
            "/p/member/1/",
            &[
                ("/p/member/1/a".into(), b"a".to_vec()),
                ("/p/member/1/b".into(), b"b".to_vec()),
            ],
        );
        assert_eq!(
            c.get("/p/member/1/c"),
            Some(None),
            "absent under a whole prefix"
        );
        assert_eq!(c.scan("/p/member/1/").unwrap().len(), 2);
        assert_eq!(
            c.scan("/p/member/1/b").unwrap().len(),
            1,
            "a narrower prefix"
        );
        assert!(c.scan("/p/member/2/").is_none());
        c.set("/p/member/1/a", None);
        assert_eq!(c.get("/p/member/1/a"), Some(None));
        c.stop();
        assert_eq!(c.get("/p/run/1"), None);
        assert!(c.scan("/p/member/1/").is_none());
    }
}
