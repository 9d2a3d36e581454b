//! What to merge: a pure function of the past segments' stats (oldest first).

use crate::error::{Error, Result};
use crate::types::SegmentName;
use std::ops::Range;

/// Stats of one past segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStat {
    pub name: SegmentName,
    pub bytes: u64,
    pub records: u64,
}

/// The most segments one merge takes (a work-table location has 7 bits for the input).
/// Policies choose at most this many; a longer chain merges in rounds.
pub const MAX_INPUTS: usize = 127;

/// How to choose the segments to merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Every past segment into one.
    All,
    /// Exactly these (adjacent) segments.
    Named(Vec<SegmentName>),
    /// Keep at most this many past segments: merge the adjacent run of the right length
    /// with the fewest bytes (size-tiered: small segments merge first).
    KeepAtMost(usize),
}

/// The adjacent run of `past` (oldest first) to merge, or `None` if there is nothing to do.
pub fn choose(past: &[SegmentStat], policy: &Policy) -> Result<Option<Range<usize>>> {
    match policy {
        // The oldest run first: repeated merges converge to one segment.
        Policy::All => Ok((past.len() >= 2).then_some(0..past.len().min(MAX_INPUTS))),
        Policy::Named(names) => {
            if names.len() < 2 {
                return Err(Error::invalid("name at least two adjacent past segments to merge"));
            }
            let mut idx = Vec::with_capacity(names.len());
            for n in names {
                let i = past.iter().position(|s| s.name == *n).ok_or_else(|| {
                    Error::NotFound(format!("{n} is not a past segment of this storage (see `fs2 info`)"))
                })?;
                idx.push(i);
            }
            if names.len() > MAX_INPUTS {
                return Err(Error::invalid(format!("one merge takes at most {MAX_INPUTS} segments")));
            }
            idx.sort_unstable();
            if idx.windows(2).any(|w| w[1] != w[0] + 1) {
                return Err(Error::invalid("the segments to merge must be adjacent in the chain, each named once"));
            }
            Ok(Some(idx[0]..idx[idx.len() - 1] + 1))
        }
        Policy::KeepAtMost(k) => {
            let k = (*k).max(1);
            if past.len() <= k {
                return Ok(None);
            }
            let run = (past.len() - k + 1).min(MAX_INPUTS);
            let best = (0..=past.len() - run)
                .min_by_key(|&i| past[i..i + run].iter().map(|s| s.bytes).sum::<u64>())
                .expect("at least one window");
            Ok(Some(best..best + run))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(sizes: &[u64]) -> Vec<SegmentStat> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &b)| SegmentStat { name: SegmentName::single(i as u64 + 1), bytes: b, records: b / 100 })
            .collect()
    }

    #[test]
    fn all_needs_two() {
        assert_eq!(choose(&stats(&[5]), &Policy::All).unwrap(), None);
        assert_eq!(choose(&stats(&[5, 6, 7]), &Policy::All).unwrap(), Some(0..3));
    }

    #[test]
    fn named_must_be_adjacent_and_known() {
        let s = stats(&[1, 2, 3, 4]);
        let n = |v: &[u64]| Policy::Named(v.iter().map(|&i| SegmentName::single(i)).collect());
        assert_eq!(choose(&s, &n(&[3, 2])).unwrap(), Some(1..3));
        assert!(choose(&s, &n(&[1, 3])).is_err());
        assert!(choose(&s, &n(&[2, 2])).is_err());
        assert!(choose(&s, &n(&[2])).is_err());
        assert!(matches!(choose(&s, &n(&[4, 9])), Err(Error::NotFound(_))));
    }

    #[test]
    fn long_chains_merge_in_rounds() {
        let s = stats(&[1; 300]);
        assert_eq!(choose(&s, &Policy::All).unwrap(), Some(0..MAX_INPUTS));
        assert_eq!(choose(&s, &Policy::KeepAtMost(1)).unwrap().map(|r| r.len()), Some(MAX_INPUTS));
    }

    #[test]
    fn keep_at_most_merges_the_smallest_run() {
        assert_eq!(choose(&stats(&[10, 10]), &Policy::KeepAtMost(2)).unwrap(), None);
        // 5 segments, keep 3: merge the cheapest run of 3 adjacent ones.
        assert_eq!(choose(&stats(&[100, 1, 2, 3, 100]), &Policy::KeepAtMost(3)).unwrap(), Some(1..4));
        assert_eq!(choose(&stats(&[1, 1, 50, 50]), &Policy::KeepAtMost(3)).unwrap(), Some(0..2));
        assert_eq!(choose(&stats(&[1, 2, 3]), &Policy::KeepAtMost(0)).unwrap(), Some(0..3));
    }
}
