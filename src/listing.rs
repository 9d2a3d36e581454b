//! Listings over the chain's objects as iterators: the engine fetches a page of
//! [`PAGE`] entries at a time (each page holds the read view for one call only, so a
//! listing of every object never blocks commits for long), and callers (`fs2 ls`, the
//! mount's directories, [`Storage::count_objects`]) write one `for` loop instead of a
//! paging loop each.

use crate::{Error, ObjectInfo, Oid, Result, RevStat, SegmentName, Storage, Tid};

/// Entries fetched from the engine per page.
pub(crate) const PAGE: usize = 256;

/// One entry of [`Storage::objects`].
#[derive(Debug)]
pub enum Listed {
    /// A live object.
    Live(ObjectInfo),
    /// An object whose records are damaged (fault containment: the listing goes on past
    /// it; loading it fails with this error).
    Damaged(Oid, Error),
}

/// A page: its entries and the oid the next page starts at (`None`: this was the last).
type Page<T> = (Vec<T>, Option<Oid>);

/// Entries fetched a page at a time. Yields `Err` once, then ends, if a page cannot be
/// read.
pub struct Paged<'a, T> {
    fetch: Box<dyn FnMut(Oid) -> Result<Page<T>> + 'a>,
    page: std::vec::IntoIter<T>,
    next: Option<Oid>,
}

impl<'a, T> Paged<'a, T> {
    fn new(start: Oid, fetch: impl FnMut(Oid) -> Result<Page<T>> + 'a) -> Paged<'a, T> {
        Paged { fetch: Box::new(fetch), page: Vec::new().into_iter(), next: Some(start) }
    }
}

impl<T> Iterator for Paged<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(x) = self.page.next() {
                return Some(Ok(x));
            }
            let start = self.next.take()?;
            match (self.fetch)(start) {
                Ok((page, next)) => {
                    self.page = page.into_iter();
                    self.next = next;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The oid after `last` if a page of `len` entries was full (more may follow).
fn after(last: Option<Oid>, len: usize) -> Option<Oid> {
    last.filter(|l| len == PAGE && l.0 < u64::MAX).map(|l| Oid(l.0 + 1))
}

impl Storage {
    /// The live objects with oid ≥ `start` as of `at` (`Tid::MAX` = current), in oid
    /// order. A damaged object is one [`Listed::Damaged`] entry and the listing goes on.
    pub fn objects(&self, start: Oid, at: Tid) -> Paged<'_, Listed> {
        Paged::new(start, move |from| {
            let (live, damaged, next) = self.list_contained(from, at, PAGE)?;
            let mut page: Vec<Listed> = live.into_iter().map(Listed::Live).collect();
            if !damaged.is_empty() {
                page.extend(damaged.into_iter().map(|(oid, e)| Listed::Damaged(oid, e)));
                page.sort_by_key(|l| match l {
                    Listed::Live(o) => o.oid,
                    Listed::Damaged(oid, _) => *oid,
                });
            }
            Ok((page, next))
        })
    }

    /// The oids with any retained record (live or deleted) from `start` on, in oid order.
    pub fn oids(&self, start: Oid) -> Paged<'_, Oid> {
        Paged::new(start, move |from| {
            let page = self.list_oids(from, PAGE)?;
            let next = after(page.last().copied(), page.len());
            Ok((page, next))
        })
    }

    /// The newest record of each oid ≥ `start` in segment `name`, in oid order.
    pub fn segment_objects(&self, name: SegmentName, start: Oid) -> Paged<'_, RevStat> {
        Paged::new(start, move |from| {
            let page = self.segment_records(name, from, PAGE)?;
            let next = after(page.last().map(|r| r.oid), page.len());
            Ok((page, next))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    fn storage_with(dir: &std::path::Path, oids: impl Iterator<Item = u64>) -> Storage {
        let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
        let mut t = s.begin();
        for o in oids {
            t.store(Oid(o), &vec![1; (o % 7) as usize]).unwrap();
        }
        t.commit().unwrap();
        s
    }

    #[test]
    fn listings_cross_pages_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        // Three full pages and a partial one, with oids that are not consecutive.
        let want: Vec<u64> = (0..3 * PAGE as u64 + 5).map(|i| i * 3).collect();
        let s = storage_with(dir.path(), want.iter().copied());
        let live: Vec<u64> = s
            .objects(Oid(0), Tid::MAX)
            .map(|l| match l.unwrap() {
                Listed::Live(o) => o.oid.0,
                Listed::Damaged(oid, e) => panic!("{oid} damaged: {e}"),
            })
            .collect();
        assert_eq!(live, want);
        let oids: Vec<u64> = s.oids(Oid(0)).map(|o| o.unwrap().0).collect();
        assert_eq!(oids, want);
        let seg = s.segments().unwrap()[0].name;
        let recs: Vec<u64> = s.segment_objects(seg, Oid(0)).map(|r| r.unwrap().oid.0).collect();
        assert_eq!(recs, want);
        // From the middle of a page, and past the end.
        assert_eq!(s.oids(Oid(4)).next().unwrap().unwrap(), Oid(6));
        assert!(s.oids(Oid(u64::MAX)).next().is_none());
    }

    #[test]
    fn exactly_full_last_page_ends() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage_with(dir.path(), 0..PAGE as u64);
        assert_eq!(s.objects(Oid(0), Tid::MAX).count(), PAGE);
        // The largest oid has no successor to go on from.
        let s2dir = tempfile::tempdir().unwrap();
        let s2 = storage_with(s2dir.path(), [u64::MAX - 1, u64::MAX].into_iter());
        assert_eq!(s2.oids(Oid(0)).map(|o| o.unwrap()).collect::<Vec<_>>(), vec![Oid(u64::MAX - 1), Oid(u64::MAX)]);
    }
}
