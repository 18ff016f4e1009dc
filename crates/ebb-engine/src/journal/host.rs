//! This host and its processes, for the pool's lock.

use std::time::{Duration, Instant};

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The user running ebb (`$USER`, `$LOGNAME`, the account's name, else `uid N`).
pub fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(account_name)
        .unwrap_or_else(|| {
            // SAFETY: getuid has no preconditions.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// The name of this process's user in the password database (cron and systemd units
/// often run without `$USER`).
fn account_name() -> Option<String> {
    // SAFETY: passwd is plain data (integers and pointers): all zeroes is a valid value.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf`, both ours and sized as passed; on
    // success `found` points at `pw`, whose strings live in `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`, which is still alive.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

/// Who does something, for the record: `user@host`.
pub fn operator() -> String {
    format!("{}@{}", user(), hostname())
}

/// Whether a process with this pid exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A killed ebb whose parent has not reaped it yet is a zombie: it holds nothing.
    exists && !is_zombie(pid)
}

pub(super) fn is_zombie(pid: u32) -> bool {
    // /proc/PID/stat: "PID (comm) STATE ..."; comm may contain spaces and parentheses.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A host-wide lock on a pool name: the file `DIR/POOL.lock`, held with `flock` for as
/// long as this value lives. The journal's lock covers one state dir; this one stops a
/// second `ebb run` of the same pool on this host that uses another state dir (a copy of
/// the pool file, `--state-dir other/`). The kernel drops it when the process ends,
/// kill -9 included, so it is never stale.
pub struct HostLock {
    _file: std::fs::File,
}

/// Why the host-wide lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum HostLockError {
    /// Another live process holds it.
    #[error("pool \"{pool}\" is being worked on by ebb pid {pid} on this host (state dir {state_dir}); one run per pool name per host (lock file {path})")]
    Held {
        /// Pool name.
        pool: String,
        /// The holder's pid, as it wrote it.
        pid: String,
        /// The holder's state dir, as it wrote it.
        state_dir: String,
        /// The lock file.
        path: String,
    },
    /// The lock dir or file cannot be used.
    #[error("cannot take the host-wide lock {path} of pool \"{pool}\": {message} (set EBB_LOCK_DIR to a directory you can write)")]
    Unusable {
        /// Pool name.
        pool: String,
        /// The lock file.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Where the host-wide locks live: `$EBB_LOCK_DIR`, else `$XDG_RUNTIME_DIR/ebb`, else
/// `/tmp/ebb-locks-UID` (per user: a directory shared by all users could be squatted).
pub fn default_lock_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("EBB_LOCK_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(d).join("ebb");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("ebb-locks-{uid}"))
}

/// How long a host-wide lock whose holder is gone may stay held by the commands that holder
/// was starting when it died, before it is reported as held.
const DEAD_HOLDER_WAIT: Duration = Duration::from_secs(10);

impl HostLock {
    /// Takes the lock of `pool` in `dir` (created if missing) without waiting, recording
    /// this pid and `state_dir` in it for the message another ebb shows.
    pub fn take(
        dir: &std::path::Path,
        pool: &str,
        state_dir: &std::path::Path,
    ) -> Result<HostLock, HostLockError> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
        use std::os::unix::io::AsRawFd;
        let path = dir.join(format!("{pool}.lock"));
        let unusable = |message: String| HostLockError::Unusable {
            pool: pool.to_string(),
            path: path.display().to_string(),
            message,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| unusable(format!("cannot create {}: {e}", dir.display())))?;
        let meta = std::fs::symlink_metadata(dir).map_err(|e| unusable(e.to_string()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() || (meta.mode() & 0o002 != 0 && meta.uid() != me) {
            return Err(unusable(format!(
                "{} is not a directory of yours",
                dir.display()
            )));
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| unusable(e.to_string()))?;
        let mut dead_holder_until = None;
        loop {
            // SAFETY: flock on a file descriptor we own; LOCK_NB never blocks.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(unusable(format!("flock: {err}")));
            }
            let mut text = String::new();
            let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
            let mut lines = text.lines();
            let pid = lines.next().unwrap_or("").trim();
            let state_dir = lines.next().unwrap_or("").trim();
            // The holder is gone (kill -9) yet its lock is held: the kernel frees a flock
            // when the last descriptor of the open file closes, and a command the holder
            // was starting when it died (forked, its program not yet running) still has
            // one for a moment. `ebb resume` right after a kill -9 waits for that moment
            // instead of being refused by a dead ebb.
            let gone = pid.parse::<u32>().is_ok_and(|p| !pid_alive(p));
            let until = *dead_holder_until.get_or_insert_with(|| Instant::now() + DEAD_HOLDER_WAIT);
            if gone && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            return Err(HostLockError::Held {
                pool: pool.to_string(),
                pid: if pid.is_empty() { "?" } else { pid }.to_string(),
                state_dir: if state_dir.is_empty() { "?" } else { state_dir }.to_string(),
                path: path.display().to_string(),
            });
        }
        let record = format!("{}\n{}\n", std::process::id(), state_dir.display());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(record.as_bytes()))
            .map_err(|e| unusable(format!("cannot write: {e}")))?;
        Ok(HostLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::{HostLock, HostLockError};
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// An ebb killed (kill -9) while it was starting a command leaves its lock held for a
    /// moment by that command: the next ebb waits for it instead of being refused. A lock
    /// whose holder lives is refused at once, naming it.
    #[test]
    fn a_lock_whose_holder_died_is_waited_for_and_a_live_holder_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("web.lock");
        let mut gone = Command::new("true").spawn().expect("true");
        gone.wait().expect("wait");
        std::fs::write(&lock, format!("{}\n/elsewhere/.ebb\n", gone.id())).expect("write");
        // What the dead holder was starting keeps the lock for a second.
        let ready = dir.path().join("ready");
        let mut command = Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("-c")
            .arg(format!("touch '{}'; sleep 1", ready.display()))
            .spawn()
            .expect("flock (util-linux)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "flock never took the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        let taken = HostLock::take(dir.path(), "web", Path::new("/here/.ebb"));
        assert!(taken.is_ok(), "{:?}", taken.err());
        assert!(command.wait().expect("wait").success());

        // Held by a live ebb (this process): refused at once, naming it.
        let t = Instant::now();
        match HostLock::take(dir.path(), "web", Path::new("/other/.ebb")) {
            Err(HostLockError::Held { pid, state_dir, .. }) => {
                assert_eq!(pid, std::process::id().to_string());
                assert_eq!(state_dir, "/here/.ebb");
            }
            other => panic!("{:?}", other.map(|_| "taken")),
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a live holder was waited for"
        );
    }

    #[test]
    fn the_account_name_is_the_one_id_knows() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .expect("id -un");
        let want = String::from_utf8_lossy(&id.stdout).trim().to_string();
        assert_eq!(super::account_name().as_deref(), Some(want.as_str()));
    }
}
