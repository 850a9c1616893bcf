//! The small per-partition raft state kept beside the segment log: the vote, the last
//! purged log id (durable, written by rename), and the last applied log id (a hint,
//! rewritten in place without fsync; it is clamped to the log on start). The applied file
//! is open while in use, under the process's budget of open log files.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::types::{LogId, Membership};
use crate::log::open_files::LogFile;

const DURABLE_FILE: &str = "raft-state.json";
const APPLIED_FILE: &str = "raft-applied";

/// State that must survive a crash exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DurableRaftState {
    pub vote: Option<openraft::Vote<u64>>,
    pub last_purged: Option<LogId>,
    /// The last membership the state machine applied (rare; rewritten on change).
    pub membership: Option<Membership>,
}

/// Reads and writes the raft state files of one partition directory.
#[derive(Debug)]
pub struct RaftStateFiles {
    dir: PathBuf,
    applied: LogFile,
}

impl RaftStateFiles {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let applied = LogFile::open(dir.join(APPLIED_FILE), false).map_err(std::io::Error::other)?;
        Ok(RaftStateFiles { dir: dir.to_path_buf(), applied })
    }

    pub fn load(&self) -> std::io::Result<DurableRaftState> {
        match std::fs::read(self.dir.join(DURABLE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{DURABLE_FILE}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DurableRaftState::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the durable state: temp file, fsync, rename, fsync the directory.
    pub fn store(&self, state: &DurableRaftState) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{DURABLE_FILE}.tmp"));
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(DURABLE_FILE))?;
        File::open(&self.dir)?.sync_all()
    }

    /// The last applied log id hint, or None when absent or unreadable.
    pub fn load_applied(&self) -> Option<LogId> {
        let mut buf = [0u8; 20];
        self.applied.get().ok()?.read_exact_at(&mut buf, 0).ok()?;
        let index = u64::from_be_bytes(buf[0..8].try_into().ok()?);
        let term = u64::from_be_bytes(buf[8..16].try_into().ok()?);
        let crc = u32::from_be_bytes(buf[16..20].try_into().ok()?);
        if crc != crc32c::crc32c(&buf[0..16]) || (index == 0 && term == 0) {
            return None;
        }
        Some(super::types::log_id(term, index))
    }

    /// Records the last applied log id; not fsynced (losing it only costs re-applying).
    pub fn store_applied(&self, id: &LogId) -> std::io::Result<()> {
        let mut buf = [0u8; 20];
        buf[0..8].copy_from_slice(&id.index.to_be_bytes());
        buf[8..16].copy_from_slice(&id.leader_id.term.to_be_bytes());
        let crc = crc32c::crc32c(&buf[0..16]);
        buf[16..20].copy_from_slice(&crc.to_be_bytes());
        // Never fsynced, so never dirty: the budget may close it between writes.
        self.applied.get().map_err(std::io::Error::other)?.write_all_at(&buf, 0)
    }
}
