//! The inode table: inode number ↔ node, with the kernel's lookup counts.
//!
//! Invariants: inode 1 is the root and is never forgotten; numbers are never reused
//! (a counter), so a generation number is not needed; a node has at most one inode at a
//! time, so the same revision keeps its inode (and its page cache) while known; an
//! entry is dropped when the kernel has forgotten every lookup of it.

use super::node::Node;
use std::collections::HashMap;

/// An inode number as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    pub const ROOT: Ino = Ino(1);
}

pub(crate) struct Inodes {
    by_node: HashMap<Node, Ino>,
    by_ino: HashMap<Ino, (Node, u64)>,
    next: u64,
}

impl Inodes {
    pub fn new() -> Inodes {
        let mut t = Inodes { by_node: HashMap::new(), by_ino: HashMap::new(), next: 2 };
        t.by_node.insert(Node::Root, Ino::ROOT);
        t.by_ino.insert(Ino::ROOT, (Node::Root, 1));
        t
    }

    /// The inode of `node`, counting one more kernel lookup of it.
    pub fn lookup(&mut self, node: Node) -> Ino {
        if let Some(&ino) = self.by_node.get(&node) {
            self.by_ino.get_mut(&ino).expect("both maps hold every inode").1 += 1;
            return ino;
        }
        let ino = Ino(self.next);
        self.next += 1;
        self.by_node.insert(node, ino);
        self.by_ino.insert(ino, (node, 1));
        ino
    }

    /// The inode of `node` if the kernel knows it (no count change).
    pub fn peek(&self, node: Node) -> Option<Ino> {
        self.by_node.get(&node).copied()
    }

    pub fn node(&self, ino: Ino) -> Option<Node> {
        self.by_ino.get(&ino).map(|e| e.0)
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&mut self, ino: Ino, n: u64) {
        if ino == Ino::ROOT {
            return;
        }
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.1 = e.1.saturating_sub(n);
            if e.1 == 0 {
                let node = e.0;
                self.by_ino.remove(&ino);
                self.by_node.remove(&node);
            }
        }
    }

    /// The inodes of the known nodes that `f` picks.
    pub fn matching(&self, f: impl Fn(&Node) -> bool) -> Vec<Ino> {
        self.by_node.iter().filter(|(n, _)| f(n)).map(|(_, i)| *i).collect()
    }

    pub fn len(&self) -> usize {
        self.by_ino.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Oid, Tid};

    #[test]
    fn same_node_same_inode_until_forgotten() {
        let mut t = Inodes::new();
        let r = Node::Rev(Oid(1), Tid(5));
        let a = t.lookup(r);
        assert_eq!(t.lookup(r), a);
        assert_eq!(t.node(a), Some(r));
        t.forget(a, 1);
        assert_eq!(t.peek(r), Some(a), "one lookup is still held");
        t.forget(a, 1);
        assert_eq!(t.peek(r), None);
        assert_eq!(t.node(a), None);
        let b = t.lookup(r);
        assert_ne!(a, b, "numbers are never reused");
        t.forget(Ino::ROOT, 100);
        assert_eq!(t.node(Ino::ROOT), Some(Node::Root));
        assert_eq!(t.len(), 2);
    }
}
