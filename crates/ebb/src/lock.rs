//! `ebb lock status|break`: the pool's lock, seen and broken from any machine.

use crate::locate::{open_etcd, open_journal, pool_name, EXIT_USAGE};
use crate::outputs::{sorted_line, EtcdLock, SqliteLock};
use crate::LockCommand;

pub fn lock(cmd: LockCommand) -> i32 {
    match cmd {
        LockCommand::Status { sel, json } => {
            let etcd = match open_etcd(&sel) {
                Ok(e) => e,
                Err(c) => return c,
            };
            let Some(etcd) = etcd else {
                // SQLite: the lock row of this state dir.
                let journal = match open_journal(&sel, false) {
                    Ok(j) => j,
                    Err(c) => return c,
                };
                let pool = pool_name(&sel).unwrap_or_default();
                return match journal.lock_holder(&pool) {
                    Ok(h) => {
                        if json {
                            ebb_out::outln!(
                                "{}",
                                sorted_line(&SqliteLock {
                                    backend: "sqlite",
                                    holder: &h
                                })
                            );
                        } else {
                            match h {
                                Some(h) => ebb_out::outln!(
                                    "pool \"{pool}\" is locked by ebb pid {} on host {}",
                                    h.pid,
                                    h.host
                                ),
                                None => ebb_out::outln!("pool \"{pool}\" is not locked"),
                            }
                        }
                        0
                    }
                    Err(e) => {
                        ebb_out::errln!("ebb: {e}");
                        1
                    }
                };
            };
            match etcd.lock_status() {
                Ok(st) => {
                    if json {
                        ebb_out::outln!(
                            "{}",
                            sorted_line(&EtcdLock {
                                backend: "etcd",
                                status: &st
                            })
                        );
                    } else {
                        let run =
                            |r: Option<i64>| r.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
                        match (&st.holder, &st.last_holder) {
                            (Some(h), _) => ebb_out::outln!(
                                "locked by ebb pid {} on host {} (user {}, run {}) since {} UTC; its etcd lease was last renewed at {} UTC and has {} s left (it frees itself that long after the holder stops renewing it)",
                                h.pid,
                                h.host,
                                h.user,
                                run(h.run_id),
                                ebb_report::text::hms(h.since_ms),
                                ebb_report::text::hms(st.renewed_ms.unwrap_or(0)),
                                st.lease_left_s.unwrap_or(0)
                            ),
                            (None, Some(h)) => ebb_out::outln!(
                                "not locked; last held by ebb pid {} on host {} (user {}, run {}) from {} UTC, its lease since lapsed or released",
                                h.pid,
                                h.host,
                                h.user,
                                run(h.run_id),
                                ebb_report::text::hms(h.since_ms),
                            ),
                            (None, None) => ebb_out::outln!("not locked"),
                        }
                        if let Some(b) = &st.broken {
                            ebb_out::outln!("{b}");
                        }
                    }
                    0
                }
                Err(e) => {
                    ebb_out::errln!("ebb: {e}");
                    1
                }
            }
        }
        LockCommand::Break { sel } => {
            let etcd = match open_etcd(&sel) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    ebb_out::errln!("ebb: `lock break` is for the etcd state backend; the SQLite lock frees itself when its holder dies (on another host: --steal-lock after 30 s without heartbeat)");
                    return EXIT_USAGE;
                }
                Err(c) => return c,
            };
            match etcd.break_lock() {
                Ok(Ok(b)) => {
                    ebb_out::outln!("{b}");
                    0
                }
                Ok(Err((h, left))) => {
                    ebb_out::errln!(
                        "ebb: refused: the lock is held by ebb pid {} on host {} (user {}), whose lease is alive ({left} s left); it frees itself {left} s after that ebb stops renewing it",
                        h.pid, h.host, h.user
                    );
                    EXIT_USAGE
                }
                Err(e) => {
                    ebb_out::errln!("ebb: {e}");
                    1
                }
            }
        }
    }
}
