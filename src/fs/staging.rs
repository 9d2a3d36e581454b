//! Where a mount's transactions stage data: memory up to a budget shared by all of
//! them, then unnamed (`O_TMPFILE`) files in the storage's `.staging/`. Nothing staged is
//! durable: it reaches the engine transaction at vote or commit.

use super::errno::FsError;
use super::FsResult;
use crate::{Oid, Transaction};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Memory all staged objects of a mount may use together; beyond it they spill to disk.
pub const STAGE_MEMORY: u64 = 64 << 20;
/// An object larger than this is staged on disk (a big object would take the budget).
pub const STAGE_MEMORY_OBJECT: u64 = 1 << 20;

/// Where a mount's transactions stage data: memory up to a budget shared by all of them,
/// then unnamed files in `dir` (`<storage>/.staging`, owner-only; nothing to clean after
/// a crash, and no inode per transaction on the common path).
pub struct Staging {
    pub dir: PathBuf,
    cap: u64,
    object_cap: u64,
    used: AtomicU64,
}

impl Staging {
    pub fn new(dir: PathBuf, cap: u64, object_cap: u64) -> Arc<Staging> {
        Arc::new(Staging { dir, cap, object_cap, used: AtomicU64::new(0) })
    }

    /// Bytes of staged data in memory now.
    pub fn in_memory(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Take `n` bytes of the budget for an object that then has `len` bytes.
    fn reserve(&self, n: u64, len: u64) -> bool {
        len <= self.object_cap
            && self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| u.checked_add(n).filter(|&t| t <= self.cap))
                .is_ok()
    }

    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    fn spill_file(&self) -> std::io::Result<File> {
        // O_TMPFILE where the file system has it (else a name unlinked at once); 0600.
        tempfile::tempfile_in(&self.dir)
    }
}

/// Staged bytes in memory; their budget is given back on drop.
pub(super) struct MemBuf {
    data: Vec<u8>,
    staging: Arc<Staging>,
}

impl Drop for MemBuf {
    fn drop(&mut self) {
        self.staging.release(self.data.len() as u64);
    }
}

/// One staged object's bytes.
pub(super) enum Buf {
    Mem(MemBuf),
    /// A spilled object: an unnamed file and its length.
    Disk(File, u64),
}

impl Buf {
    pub(super) fn new(staging: &Arc<Staging>, data: Vec<u8>) -> std::io::Result<Buf> {
        let n = data.len() as u64;
        if staging.reserve(n, n) {
            return Ok(Buf::Mem(MemBuf { data, staging: staging.clone() }));
        }
        let f = staging.spill_file()?;
        f.write_all_at(&data, 0)?;
        Ok(Buf::Disk(f, n))
    }

    pub(super) fn len(&self) -> u64 {
        match self {
            Buf::Mem(m) => m.data.len() as u64,
            Buf::Disk(_, n) => *n,
        }
    }

    /// Make the object `len` bytes long in memory if the budget allows; else move it to
    /// disk. Either way, afterwards it can be written up to `len`.
    pub(super) fn room(&mut self, len: u64) -> std::io::Result<()> {
        let Buf::Mem(m) = self else { return Ok(()) };
        let have = m.data.len() as u64;
        if len <= have || m.staging.reserve(len - have, len) {
            if len > have {
                m.data.resize(len as usize, 0);
            }
            return Ok(());
        }
        let f = m.staging.spill_file()?;
        f.write_all_at(&m.data, 0)?;
        *self = Buf::Disk(f, have);
        Ok(())
    }

    pub(super) fn write_at(&mut self, data: &[u8], at: u64) -> std::io::Result<()> {
        let end = at + data.len() as u64;
        self.room(end)?;
        match self {
            Buf::Mem(m) => m.data[at as usize..end as usize].copy_from_slice(data),
            Buf::Disk(f, n) => {
                f.write_all_at(data, at)?;
                *n = (*n).max(end);
            }
        }
        Ok(())
    }

    pub(super) fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        match self {
            Buf::Mem(m) if len <= m.data.len() as u64 => {
                m.staging.release(m.data.len() as u64 - len);
                m.data.truncate(len as usize);
                Ok(())
            }
            Buf::Mem(_) => self.room(len).and_then(|()| self.set_len(len)),
            Buf::Disk(f, n) => {
                f.set_len(len)?;
                *n = len;
                Ok(())
            }
        }
    }

    /// At most `size` bytes at `offset`.
    pub(super) fn read(&self, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
        let n = (size as u64).min(self.len().saturating_sub(offset)) as usize;
        match self {
            Buf::Mem(m) => Ok(m.data[offset as usize..offset as usize + n].to_vec()),
            Buf::Disk(f, _) => {
                let mut buf = vec![0u8; n];
                f.read_exact_at(&mut buf, offset)?;
                Ok(buf)
            }
        }
    }

    /// Store the bytes in the engine transaction.
    pub(super) fn store(&self, t: &mut Transaction, oid: Oid) -> FsResult<()> {
        match self {
            Buf::Mem(m) => t.store(oid, &m.data)?,
            // All of it, whatever its size (`read` takes at most u32::MAX bytes).
            Buf::Disk(f, n) => {
                let mut data = vec![0u8; *n as usize];
                f.read_exact_at(&mut data, 0).map_err(|e| io_err(format!("read staged {oid}"), e))?;
                t.store(oid, &data)?
            }
        }
        Ok(())
    }
}

pub(super) fn io_err(what: String, e: std::io::Error) -> FsError {
    FsError::new(e.raw_os_error().unwrap_or(libc::EIO), format!("{what}: {e}"))
}
