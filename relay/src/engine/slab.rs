//! Typed handles into slabs (quinn's `ConnectionHandle` into a `Slab`): sessions and
//! conferences live in vectors of reusable slots, and everything that refers to one —
//! the address, id and ufrag indexes, a conference's member list, the deadline heap,
//! messages from other shards — holds its handle.
//!
//! A handle names a slot *and* the incarnation of that slot, so a handle kept after its
//! entry was removed finds nothing instead of whatever reuses the slot later. Lookups
//! therefore return `Option`: a stale handle is an ordinary outcome (a message from
//! another shard about a session removed meanwhile), never a panic.
//!
//! ```text
//!   slot:        0            1            2
//!   entries:  [ A (inc 0) | (free, inc 1) | C (inc 0) ]
//!   handle {slot: 1, incarnation: 0}  → None   (B was removed; its slot is free)
//!   insert D  → {slot: 1, incarnation: 1}
//!   handle {slot: 1, incarnation: 0}  → None   (still B's handle, not D's)
//! ```

use std::marker::PhantomData;

/// A handle type: a slot and an incarnation.
pub(super) trait Handle: Copy {
    /// The handle of `slot` in its `incarnation`.
    fn new(slot: u32, incarnation: u32) -> Self;
    /// Its slot.
    fn slot(self) -> u32;
    /// Which incarnation of the slot it names.
    fn incarnation(self) -> u32;
}

struct Entry<T> {
    incarnation: u32,
    value: Option<T>,
}

/// Values of type `T` in reusable slots, named by handles of type `H`.
pub(super) struct Slab<H, T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
    _handle: PhantomData<H>,
}

impl<H: Handle, T> Default for Slab<H, T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            _handle: PhantomData,
        }
    }
}

impl<H: Handle, T> Slab<H, T> {
    /// Stores `value` and returns its handle.
    pub(super) fn insert(&mut self, value: T) -> H {
        self.len += 1;
        // Free slots are always in range; `get_mut` keeps even a broken list from
        // panicking.
        if let Some(slot) = self.free.pop()
            && let Some(e) = self.entries.get_mut(slot as usize)
        {
            e.incarnation = e.incarnation.wrapping_add(1);
            e.value = Some(value);
            return H::new(slot, e.incarnation);
        }
        let slot = self.entries.len() as u32;
        self.entries.push(Entry {
            incarnation: 0,
            value: Some(value),
        });
        H::new(slot, 0)
    }

    /// Takes the value `h` names out; its slot is free for reuse.
    pub(super) fn remove(&mut self, h: H) -> Option<T> {
        let e = self.entries.get_mut(h.slot() as usize)?;
        if e.incarnation != h.incarnation() {
            return None;
        }
        let value = e.value.take()?;
        self.free.push(h.slot());
        self.len -= 1;
        Some(value)
    }

    /// The value `h` names, if it is still there.
    pub(super) fn get(&self, h: H) -> Option<&T> {
        let e = self.entries.get(h.slot() as usize)?;
        (e.incarnation == h.incarnation())
            .then_some(e.value.as_ref())
            .flatten()
    }

    /// The value `h` names, if it is still there.
    pub(super) fn get_mut(&mut self, h: H) -> Option<&mut T> {
        let e = self.entries.get_mut(h.slot() as usize)?;
        if e.incarnation != h.incarnation() {
            return None;
        }
        e.value.as_mut()
    }

    /// Every value with its handle.
    pub(super) fn iter(&self) -> impl Iterator<Item = (H, &T)> {
        self.entries.iter().enumerate().filter_map(|(slot, e)| {
            let v = e.value.as_ref()?;
            Some((H::new(slot as u32, e.incarnation), v))
        })
    }

    /// How many values it holds.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// Defines a handle type.
macro_rules! handle {
    ($(#[$doc:meta])* $vis:vis $t:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis struct $t {
            /// The slot.
            pub slot: u32,
            /// The incarnation of that slot.
            pub incarnation: u32,
        }

        impl $crate::engine::slab::Handle for $t {
            fn new(slot: u32, incarnation: u32) -> Self {
                $t { slot, incarnation }
            }
            fn slot(self) -> u32 {
                self.slot
            }
            fn incarnation(self) -> u32 {
                self.incarnation
            }
        }
    };
}
pub(super) use handle;

#[cfg(test)]
mod tests {
    use super::*;

    handle!(
        /// A test handle.
        H
    );

    #[test]
    fn a_stale_handle_finds_nothing_even_after_its_slot_is_reused() {
        let mut slab: Slab<H, &str> = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(b), Some("b"));
        assert_eq!(slab.get(b), None);
        assert_eq!(slab.remove(b), None, "removing twice is a no-op");
        let d = slab.insert("d");
        assert_eq!(d.slot, b.slot, "the slot is reused");
        assert_eq!(slab.get(b), None, "b's handle does not find d");
        assert_eq!(slab.get(d), Some(&"d"));
        assert_eq!(slab.get(a), Some(&"a"));
        assert_eq!(slab.len(), 2);
        let all: Vec<_> = slab.iter().map(|(h, v)| (h, *v)).collect();
        assert_eq!(all, vec![(a, "a"), (d, "d")]);
        assert_eq!(slab.get(H::new(7, 0)), None, "a slot never used");
    }
}
