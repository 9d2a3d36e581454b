//! Rotation: seal the active segment and start the next one.

use super::*;

impl Chain {
    /// Seal the active segment and start a new one (see `rotate_locked`). Voted
    /// transactions have space reserved in this segment: new votes wait meanwhile, and
    /// the rotation waits for the voted ones to finish or abort.
    pub fn rotate(&self) -> Result<SegmentName> {
        let mut w = self.writer.lock().unwrap();
        w.rotate_asked += 1;
        while w.reserved > 0 {
            w = self.writer_cv.wait(w).unwrap();
        }
        let r = rotate_locked(self, &mut w);
        w.rotate_asked -= 1;
        w.rotate_wanted = false;
        self.writer_cv.notify_all();
        r
    }

    /// Make every commit durable (after bulk loads with `sync: false`).
    pub fn sync(&self) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        if let Some(seg) = w.seg.clone() {
            seg.file.sync().map_err(|e| Error::io(&seg.path, "sync", e))?;
            w.synced = w.end;
        }
        Ok(())
    }
}

/// Rotate when the active segment has grown past the configured size.
/// Whether it rotated.
pub(super) fn maybe_rotate(chain: &Chain, w: &mut MutexGuard<'_, Writer>) -> bool {
    let limit = chain.opts.rotate_size;
    if limit > 0 && w.end >= limit && w.poisoned.is_none() && w.seg.is_some() {
        if w.reserved > 0 {
            // Voted transactions have space reserved in this segment: new votes wait
            // (`rotate_wanted`) until they finished, then whoever is next rotates.
            w.rotate_wanted = true;
            return false;
        }
        w.rotate_wanted = false;
        match rotate_locked(chain, w) {
            Ok(_) => return true,
            Err(e) => log::error!("automatic rotation failed: {e}"),
        }
    }
    w.rotate_wanted = false;
    false
}

/// Seal the active segment (index + trailer), start the next one, swap the in-memory
/// index for the mapped one. Each step is durable before the next; recovery finishes a
/// rotation interrupted after sealing and drops an unfinished seal.
pub(super) fn rotate_locked(chain: &Chain, w: &mut MutexGuard<'_, Writer>) -> Result<SegmentName> {
    if let Some(why) = &w.poisoned {
        return Err(Error::ReadOnly(why.clone()));
    }
    if w.reserved > 0 {
        return Err(Error::Busy("a voted transaction is pending; rotate after it finishes".into()));
    }
    let Some(seg) = w.seg.clone() else { return Err(Error::ReadOnly("the storage is open read-only".into())) };
    let (entries, stats) = {
        let v = chain.view.read().unwrap();
        let a = v.active.as_ref().expect("active");
        (a.index.iter().map(|(o, e)| (*o, e.offset)).collect::<Vec<_>>(), a.stats.clone())
    };
    let fail = |w: &mut MutexGuard<'_, Writer>, e: Error| {
        w.poisoned = Some(failed(&format!("rotation failed: {e}")));
        e
    };
    if let Err(e) = seal(&seg, w.end, &entries, &stats) {
        return Err(fail(w, e));
    }
    let header = seg.header.successor();
    let new_seg = match SegmentFile::create(&*chain.opts.vfs, &chain.dir, header) {
        Ok(s) => Arc::new(s),
        Err(e) => return Err(fail(w, e)),
    };
    let parts = match SegmentFile::open(&*chain.opts.vfs, &seg.path, false).and_then(PastSegment::open) {
        Ok(p) => p,
        Err(e) => return Err(fail(w, e)),
    };
    {
        let mut v = chain.view.write().unwrap();
        v.pasts.splice(0..0, parts);
        v.active = Some(Active {
            seg: new_seg.clone(),
            index: BTreeMap::new(),
            end: HEADER_SIZE as u64,
            stats: Default::default(),
            damaged: Vec::new(),
        });
    }
    let name = new_seg.header.name;
    w.seg = Some(new_seg);
    w.end = HEADER_SIZE as u64;
    w.allocated = HEADER_SIZE as u64;
    w.synced = HEADER_SIZE as u64;
    Ok(name)
}
