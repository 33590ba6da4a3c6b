//! Which open handles the kernel reads itself (passthrough) and which come up to us.
//!
//! The kernel refuses (EIO) a passthrough open of an inode that is open in caching mode, so
//! while any caching-mode handle of an inode is open, new opens of it are caching-mode too.
//! A passthrough registration (the kernel's backing id) is shared by every handle of its
//! inode and ends when the last of them is released (the id is dropped, which closes it).
//! Generic over the id so that this bookkeeping is tested without a kernel.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// The handles of one mount, by kind.
#[derive(Debug)]
pub struct Handles<Id> {
    /// Passthrough handles: their inode and registration.
    by_handle: HashMap<u64, (u64, Arc<Id>)>,
    by_inode: HashMap<u64, Weak<Id>>,
    /// Caching-mode handles per inode, and the inode of each.
    caching: HashMap<u64, usize>,
    caching_handles: HashMap<u64, u64>,
}

impl<Id> Default for Handles<Id> {
    fn default() -> Self {
        Self {
            by_handle: HashMap::new(),
            by_inode: HashMap::new(),
            caching: HashMap::new(),
            caching_handles: HashMap::new(),
        }
    }
}

impl<Id> Handles<Id> {
    /// Whether a new open of `ino` may be a passthrough open: no caching-mode handle of it
    /// is open.
    pub fn may_pass(&self, ino: u64) -> bool {
        !self.caching.contains_key(&ino)
    }

    /// The backing id of `ino`, while a passthrough handle of it holds one.
    pub fn backing(&self, ino: u64) -> Option<Arc<Id>> {
        self.by_inode.get(&ino).and_then(Weak::upgrade)
    }

    /// Records handle `fh` of `ino` as read by the kernel through `id`.
    pub fn opened_passthrough(&mut self, ino: u64, fh: u64, id: Arc<Id>) {
        self.by_inode.insert(ino, Arc::downgrade(&id));
        self.by_handle.insert(fh, (ino, id));
    }

    /// Records handle `fh` of `ino` as read through us.
    pub fn opened_caching(&mut self, ino: u64, fh: u64) {
        *self.caching.entry(ino).or_default() += 1;
        self.caching_handles.insert(fh, ino);
    }

    /// Forgets handle `fh` (of either kind; an unknown one is ignored).
    pub fn released(&mut self, fh: u64) {
        if let Some((ino, id)) = self.by_handle.remove(&fh) {
            // The inode's last handle: its entry goes with the registration.
            if Arc::strong_count(&id) == 1 {
                self.by_inode.remove(&ino);
            }
        }
        if let Some(ino) = self.caching_handles.remove(&fh) {
            if let Some(n) = self.caching.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    self.caching.remove(&ino);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backing id that counts how many are alive (the kernel's registrations): it holds a
    /// clone of the counter, dropped with it.
    struct Id(#[allow(dead_code)] Arc<()>);

    #[test]
    fn handles_of_one_inode_share_one_registration_until_the_last_is_released() {
        let alive = Arc::new(());
        let mut h: Handles<Id> = Handles::default();
        assert!(h.may_pass(7) && h.backing(7).is_none());
        h.opened_passthrough(7, 1, Arc::new(Id(alive.clone())));
        let shared = h.backing(7).expect("registered");
        h.opened_passthrough(7, 2, shared);
        assert_eq!(
            Arc::strong_count(&alive),
            2,
            "one registration for both handles"
        );
        h.released(1);
        assert!(h.backing(7).is_some(), "handle 2 still holds it");
        h.released(2);
        assert!(h.backing(7).is_none());
        assert_eq!(Arc::strong_count(&alive), 1, "the registration was closed");
        assert!(h.by_inode.is_empty() && h.by_handle.is_empty());
    }

    #[test]
    fn a_caching_handle_keeps_new_opens_of_its_inode_out_of_passthrough() {
        let mut h: Handles<Id> = Handles::default();
        h.opened_caching(7, 1);
        h.opened_caching(7, 2);
        assert!(!h.may_pass(7));
        assert!(h.may_pass(8), "other inodes are not affected");
        h.released(1);
        assert!(!h.may_pass(7), "handle 2 is still in caching mode");
        h.released(2);
        assert!(h.may_pass(7));
        h.released(2);
        h.released(99);
        assert!(
            h.may_pass(7),
            "releasing twice or an unknown handle changes nothing"
        );
    }
}
