//! The engine's outbound queue for datagrams it writes itself (STUN answers, DTLS
//! flights, RTCP): a ring of fixed-size slots allocated once, so queueing never
//! allocates. Forwarded media never passes through here: it is sent from the receive
//! buffer.

use std::net::SocketAddr;

/// Largest datagram the engine writes.
pub const SLOT_LEN: usize = 1500;

/// A datagram to send, borrowed from the queue until the next `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to.
    pub dest: SocketAddr,
    /// The bytes.
    pub data: &'a [u8],
}

pub(crate) struct TxQueue {
    slots: Box<[[u8; SLOT_LEN]]>,
    meta: Box<[(SocketAddr, u16)]>,
    head: usize,
    len: usize,
    /// The slot handed out by the last `pop`, free again at the next call.
    lent: bool,
}

impl TxQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        TxQueue {
            slots: vec![[0u8; SLOT_LEN]; capacity.max(1)].into_boxed_slice(),
            meta: vec![(unspecified, 0); capacity.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
            lent: false,
        }
    }

    /// Queues a datagram that `write` builds into a slot and returns the length of.
    /// Returns false (nothing queued) when the queue is full or `write` fails.
    pub(crate) fn push<E>(
        &mut self,
        dest: SocketAddr,
        write: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> bool {
        self.reclaim();
        let cap = self.slots.len();
        if self.len == cap {
            return false;
        }
        let at = (self.head + self.len) % cap;
        match write(&mut self.slots[at]) {
            Ok(n) if n > 0 && n <= SLOT_LEN => {
                self.meta[at] = (dest, n as u16);
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether a [`push`](Self::push) now would find no free slot.
    pub(crate) fn is_full(&mut self) -> bool {
        self.reclaim();
        self.len == self.slots.len()
    }

    /// Queues a copy of `data` (at most [`SLOT_LEN`] bytes).
    pub(crate) fn push_copy(&mut self, dest: SocketAddr, data: &[u8]) -> bool {
        self.push(dest, |buf| match buf.get_mut(..data.len()) {
            Some(slot) => {
                slot.copy_from_slice(data);
                Ok(data.len())
            }
            None => Err(()),
        })
    }

    fn reclaim(&mut self) {
        if self.lent {
            self.lent = false;
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Transmit<'_>> {
        self.reclaim();
        if self.len == 0 {
            return None;
        }
        self.lent = true;
        let (dest, n) = self.meta[self.head];
        Some(Transmit {
            dest,
            data: &self.slots[self.head][..usize::from(n)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn fifo_with_reuse_and_a_full_queue() {
        let mut q = TxQueue::new(2);
        assert!(q.push_copy(addr(1), b"one"));
        assert!(q.push_copy(addr(2), b"two"));
        assert!(!q.push_copy(addr(3), b"three"), "full");
        let t = q.pop().unwrap();
        assert_eq!((t.dest, t.data), (addr(1), &b"one"[..]));
        // The lent slot is reclaimed by the next push or pop.
        assert!(q.push_copy(addr(3), b"three"));
        assert_eq!(q.pop().unwrap().data, b"two");
        assert_eq!(q.pop().unwrap().data, b"three");
        assert!(q.pop().is_none());
    }

    #[test]
    fn oversized_and_failed_writes_queue_nothing() {
        let mut q = TxQueue::new(4);
        assert!(!q.push_copy(addr(1), &[0u8; SLOT_LEN + 1]));
        assert!(!q.push(addr(1), |_| Err::<usize, ()>(())));
        assert!(!q.push(addr(1), |_| Ok::<usize, ()>(0)));
        assert!(q.pop().is_none());
    }
}
