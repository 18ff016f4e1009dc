//! The state file: each member's host state and initial state, kept across balancer
//! restarts. Written atomically (temporary file, fsync, rename, fsync of the directory) so
//! a crash leaves either the old or the new file, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::status::{HostState, InitialState};

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Format version; 1.
    pub version: u32,
    /// Per member name in the balancer.
    pub members: BTreeMap<String, SavedMember>,
}

/// One member's saved states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMember {
    /// Host state when the file was written.
    pub state: HostState,
    /// Initial host state.
    pub initial_state: InitialState,
}

/// Reads the state file; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<SavedState>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the state file {}: {e}",
                path.display()
            ))
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "the state file {} is not valid ({e}); fix it, or delete it to start every member in its default state (started)",
            path.display()
        )
    })
}

/// Writes the state file atomically.
pub fn save(path: &Path, state: &SavedState) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "lb-state.json".into());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        assert_eq!(load(&p).unwrap(), None);
        let mut s = SavedState {
            version: 1,
            ..Default::default()
        };
        s.members.insert(
            "a".into(),
            SavedMember {
                state: HostState::Stopped,
                initial_state: InitialState::Stopped,
            },
        );
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), Some(s));
        std::fs::write(&p, "{not json").unwrap();
        assert!(load(&p).unwrap_err().contains("delete it"));
    }
}
