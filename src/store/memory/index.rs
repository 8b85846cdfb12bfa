//! The names of a big namespace in order, so that a listing can copy it
//! out in bounded pages, each resuming after the last name of the one
//! before, without holding the table's lock for the whole listing.
//!
//! A small namespace has no index: a page copies all of it (at most
//! [`BUILD_AT`] entries, as bounded as a page), and the hot path pays
//! nothing. The index is built when the namespace grows past [`BUILD_AT`]
//! names and dropped when it shrinks below [`DROP_BELOW`], so a table that
//! hovers near the threshold does not rebuild it over and over.

use super::NameMap;
use crate::name::LockName;
use std::collections::BTreeSet;
use std::ops::Bound;

/// Entries a listing copies per acquisition of the table's lock.
pub const PAGE: usize = 1024;

/// Names past which a namespace keeps an ordered index.
const BUILD_AT: usize = 2 * PAGE;

/// Names below which the index is dropped again.
const DROP_BELOW: usize = PAGE;

/// The ordered names of one namespace, while it is big. See the module
/// docs.
#[derive(Default)]
pub(super) struct Index {
    sorted: Option<BTreeSet<LockName>>,
}

impl Index {
    /// `map` just gained `name`.
    pub(super) fn inserted<V>(&mut self, map: &NameMap<V>, name: &LockName) {
        match &mut self.sorted {
            Some(sorted) => {
                sorted.insert(name.clone());
            }
            None if map.len() > BUILD_AT => self.sorted = Some(map.keys().cloned().collect()),
            None => {}
        }
    }

    /// `map` just lost `name`.
    pub(super) fn removed<V>(&mut self, map: &NameMap<V>, name: &[u8]) {
        if let Some(sorted) = &mut self.sorted {
            sorted.remove(name);
            if map.len() < DROP_BELOW {
                self.sorted = None;
            }
        }
    }

    /// Whether the namespace is big enough to be indexed now.
    #[cfg(test)]
    pub(super) fn is_built(&self) -> bool {
        self.sorted.is_some()
    }

    /// The entries of `map` named after `after` (all when `None`): at most
    /// [`PAGE`] of them in name order when the namespace is indexed, else
    /// all of them in no order. The second value is the name to resume
    /// after, or `None` when this page reached the end.
    pub(super) fn page<'a, V>(
        &self,
        map: &'a NameMap<V>,
        after: Option<&[u8]>,
    ) -> (Vec<&'a V>, Option<LockName>) {
        let Some(sorted) = &self.sorted else {
            let rest = map
                .iter()
                .filter(|(name, _)| after.is_none_or(|a| name.as_bytes() > a))
                .map(|(_, v)| v)
                .collect();
            return (rest, None);
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut names = sorted.range::<[u8], _>((start, Bound::Unbounded));
        let mut page = Vec::new();
        let mut last = None;
        for name in names.by_ref().take(PAGE) {
            page.extend(map.get(name.as_bytes()));
            last = Some(name);
        }
        let next = names.next().and(last).cloned();
        (page, next)
    }
}
