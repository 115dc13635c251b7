//! Merkle trees with RFC 6962 hashing, for signing many decisions with one
//! signature while each stays verifiable on its own.
//!
//! leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right). The
//! tree of n leaves is built level by level, pairing neighbours and carrying
//! an odd last node up unchanged, which gives RFC 6962's tree; paths are
//! checked with RFC 9162's inclusion-proof algorithm.

use sha2::{Digest, Sha256};

/// Longest inclusion path accepted (a tree of up to 2^64 leaves).
pub const MAX_PATH: usize = 64;

/// Hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A built tree: every level, leaves first.
pub struct Tree {
    levels: Vec<Vec<[u8; 32]>>,
}

impl Tree {
    /// Builds the tree over leaf hashes (at least one).
    pub fn new(leaves: Vec<[u8; 32]>) -> Tree {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let prev = levels.last().map(Vec::as_slice).unwrap_or_default();
            let next: Vec<[u8; 32]> = prev
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [single] => *single,
                    _ => [0; 32],
                })
                .collect();
            levels.push(next);
        }
        Tree { levels }
    }

    /// The root (all zero for an empty tree).
    pub fn root(&self) -> [u8; 32] {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 32])
    }

    /// Number of leaves.
    pub fn size(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// The inclusion path of leaf `index`, leaf to root.
    pub fn path(&self, mut index: usize) -> Vec<[u8; 32]> {
        let mut path = Vec::new();
        let below_root = self.levels.len().saturating_sub(1);
        for level in self.levels.iter().take(below_root) {
            if let Some(sibling) = level.get(index ^ 1) {
                path.push(*sibling);
            }
            index /= 2;
        }
        path
    }
}

/// The root a leaf and its inclusion path lead to, or `None` when the path
/// does not fit a tree of `size` leaves (RFC 9162, 2.1.3.2).
pub fn root_from_path(
    leaf: [u8; 32],
    index: u64,
    size: u64,
    path: &[[u8; 32]],
) -> Option<[u8; 32]> {
    if index >= size || path.len() > MAX_PATH {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's definition, recursively: the reference for the builder.
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2;
                let k = if k == n { n / 2 } else { k };
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn every_path_of_every_size_leads_to_the_rfc_root() {
        for n in 1..=70usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let tree = Tree::new(leaves.clone());
            assert_eq!(tree.root(), mth(&leaves), "root of {n}");
            for (i, leaf) in leaves.iter().enumerate() {
                let path = tree.path(i);
                assert_eq!(
                    root_from_path(*leaf, i as u64, n as u64, &path),
                    Some(tree.root()),
                    "leaf {i} of {n}"
                );
                // The same path does not prove another position (the size is bound
                // by the signed tree head, which covers it).
                if n > 1 {
                    let other = (i + 1) % n;
                    assert_ne!(
                        root_from_path(*leaf, other as u64, n as u64, &path),
                        Some(tree.root())
                    );
                }
            }
        }
    }

    #[test]
    fn a_changed_leaf_does_not_prove() {
        let leaves: Vec<[u8; 32]> = (0..9u8).map(|i| leaf_hash(&[i])).collect();
        let tree = Tree::new(leaves);
        assert_ne!(
            root_from_path(leaf_hash(b"other"), 3, 9, &tree.path(3)),
            Some(tree.root())
        );
        assert_eq!(root_from_path(leaf_hash(&[3]), 9, 9, &tree.path(3)), None);
    }
}
