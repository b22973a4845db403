//! A conversation's messages, with what changed since its store last saved them.
//!
//! A conversation can stay open for days and hundreds of messages. A store that keeps the
//! entries apart from the snapshot writes only the changed tail on each save instead of the
//! whole transcript: every way to change an entry here lowers the `unchanged` mark, so no
//! change can be missed.

use std::ops::Deref;

use serde::{Deserialize, Serialize};

use super::TranscriptEntry;

/// Serialized as the plain list of entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Transcript {
    entries: Vec<TranscriptEntry>,
    /// Entries before this index are as the store last saved them.
    #[serde(skip)]
    unchanged: usize,
}

impl Transcript {
    /// Entries as a store read them back: all saved.
    pub fn saved(entries: Vec<TranscriptEntry>) -> Self {
        let unchanged = entries.len();
        Self { entries, unchanged }
    }

    pub fn push(&mut self, entry: TranscriptEntry) {
        super::push_compact(&mut self.entries, entry);
    }

    /// Inserts `entries` at `at` (at most the length), moving the later ones back.
    pub fn insert_at(&mut self, at: usize, entries: impl IntoIterator<Item = TranscriptEntry>) {
        let at = at.min(self.entries.len());
        self.unchanged = self.unchanged.min(at);
        self.entries.splice(at..at, entries);
    }

    /// Whether an entry of journal event `seq` is here already: the store may hold entries of
    /// events its snapshot does not count yet, and the journal's replay then skips them.
    /// Entries of events come in journal order, so the last one with a sequence tells.
    pub fn holds_event(&self, seq: u64) -> bool {
        self.entries
            .iter()
            .rev()
            .find_map(|e| e.seq)
            .is_some_and(|last| last >= seq)
    }

    /// The first entry matching `found`, to change it.
    pub fn find_mut(
        &mut self,
        found: impl Fn(&TranscriptEntry) -> bool,
    ) -> Option<&mut TranscriptEntry> {
        let index = self.entries.iter().position(found)?;
        self.unchanged = self.unchanged.min(index);
        Some(&mut self.entries[index])
    }

    /// Every entry, to change any of them.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, TranscriptEntry> {
        self.unchanged = 0;
        self.entries.iter_mut()
    }

    /// Where the entries not saved as they are begin, and those entries.
    pub fn changed(&self) -> (usize, &[TranscriptEntry]) {
        let from = self.unchanged.min(self.entries.len());
        (from, &self.entries[from..])
    }

    /// The entries from the `n`th last that is not an agent's note on, and where they start.
    pub fn latest_visible(&self, n: usize) -> (usize, Self) {
        let mut from = self.entries.len();
        let mut visible = 0;
        while from > 0 && visible < n {
            from -= 1;
            visible += usize::from(!self.entries[from].internal);
        }
        (from, Self::saved(self.entries[from..].to_vec()))
    }

    /// The store saved every entry.
    pub fn mark_saved(&mut self) {
        self.unchanged = self.entries.len();
    }
}

impl Deref for Transcript {
    type Target = [TranscriptEntry];

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

/// Equal when the entries are: what was saved is bookkeeping, not content.
impl PartialEq for Transcript {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl From<Vec<TranscriptEntry>> for Transcript {
    /// Entries no store has saved yet.
    fn from(entries: Vec<TranscriptEntry>) -> Self {
        Self {
            entries,
            unchanged: 0,
        }
    }
}

impl<'a> IntoIterator for &'a Transcript {
    type Item = &'a TranscriptEntry;
    type IntoIter = std::slice::Iter<'a, TranscriptEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::state::Author;

    fn entry(n: i64) -> TranscriptEntry {
        TranscriptEntry {
            at_ms: n,
            author: Author::Bot,
            message_id: Some(n.to_string()),
            content: None,
            unsent: false,
            seq: None,
            client_msg_id: None,
            internal: false,
            outgoing: None,
        }
    }

    fn changed_at(t: &Transcript) -> Vec<i64> {
        t.changed().1.iter().map(|e| e.at_ms).collect()
    }

    #[test]
    fn a_short_transcript_holds_no_empty_slots_and_a_long_one_grows_by_doubling() {
        let mut t = Transcript::default();
        let capacities: Vec<usize> = (0..6)
            .map(|n| {
                t.push(entry(n));
                t.entries.capacity()
            })
            .collect();
        assert_eq!(capacities, [1, 2, 3, 4, 8, 8]);
    }

    #[test]
    fn every_change_lowers_what_counts_as_saved() {
        let mut t = Transcript::saved((0..5).map(entry).collect());
        assert_eq!(t.changed(), (5, &[][..]));
        t.push(entry(5));
        assert_eq!(changed_at(&t), [5]);
        t.mark_saved();

        t.find_mut(|e| e.at_ms == 3).unwrap().unsent = true;
        assert_eq!(t.changed().0, 3);
        assert_eq!(changed_at(&t), [3, 4, 5]);
        t.mark_saved();

        t.insert_at(5, [entry(9)]);
        assert_eq!(changed_at(&t), [9, 5], "the moved entry is rewritten too");
        t.mark_saved();

        t.iter_mut().for_each(|e| e.internal = true);
        assert_eq!(t.changed().0, 0);
    }

    #[test]
    fn serialized_as_the_list_and_equal_by_entries() {
        let saved = Transcript::saved(vec![entry(1)]);
        let fresh = Transcript::from(vec![entry(1)]);
        assert_eq!(saved, fresh);
        assert_eq!(
            serde_json::to_value(&saved).unwrap(),
            serde_json::to_value(vec![entry(1)]).unwrap()
        );
        let back: Transcript =
            serde_json::from_value(serde_json::to_value(&saved).unwrap()).unwrap();
        assert_eq!(
            back.changed().0,
            0,
            "read from JSON: nothing saved apart yet"
        );
    }
}
