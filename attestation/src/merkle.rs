//! RFC 6962 (Certificate Transparency) Merkle trees over receipt leaves.
//!
//! Both sides: the enclave builds a tree per batch and hands each answer its inclusion
//! proof; verifiers recompute the root from a leaf and its proof. Leaf and node hashes
//! carry distinct prefixes (0x00, 0x01) so a leaf can never pose as a node.

use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn split(n: usize) -> usize {
    // Largest power of two strictly less than n (n >= 2).
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The tree head over `leaves` (already leaf-hashed). Empty trees hash the empty string.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof (audit path) of leaf `index` (RFC 6962 §2.1.1).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(&leaves[..k], m, out);
            out.push(root(&leaves[k..]));
        } else {
            path(&leaves[k..], m - k, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    if index < leaves.len() {
        path(leaves, index, &mut out);
    }
    out
}

/// Recomputes the root from a leaf hash and its proof (RFC 9162 §2.1.3.2).
/// Returns `None` if the proof has the wrong shape for `(index, size)`.
pub fn root_from_proof(leaf: &Hash, index: u64, size: u64, proof: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// The consistency proof between the tree over `leaves[..first]` and the tree over all
/// `leaves` (RFC 6962 §2.1.2, `PROOF(m, D[n])`). Empty when `first` is 0 or the size.
pub fn consistency_proof(leaves: &[Hash], first: usize) -> Vec<Hash> {
    fn subproof(leaves: &[Hash], m: usize, complete: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                out.push(root(leaves));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(&leaves[..k], m, complete, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(&leaves[k..], m - k, false, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    if first > 0 && first < leaves.len() {
        subproof(leaves, first, true, &mut out);
    }
    out
}

/// Runs a consistency proof from size `first` to size `second` (RFC 9162 §2.1.4.2) and
/// returns the two roots it implies: the root of the first `first` leaves, and the root of
/// the whole tree. `first_root` is taken as the first tree's root where the proof leaves it
/// out (when `first` is a power of two, the old tree is a subtree of the new one); a proof
/// of the wrong shape gives `None`. A proof whose second root is a signed root but whose
/// first root differs from another signed root of size `first` shows that the two cannot be
/// in one append-only log: a fork.
pub fn consistency_roots(first: u64, second: u64, first_root: &Hash, proof: &[Hash]) -> Option<(Hash, Hash)> {
    if first == 0 || first > second {
        return None;
    }
    if first == second {
        return proof.is_empty().then_some((*first_root, *first_root));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (first_hash, rest) = path.split_first()?;
    let (mut fr, mut sr) = (*first_hash, *first_hash);
    for c in rest {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some((fr, sr))
}

/// Whether `proof` shows the tree (`first`, `first_root`) is a prefix of (`second`,
/// `second_root`). An empty first tree is a prefix of every tree.
pub fn verify_consistency(
    first: u64,
    first_root: &Hash,
    second: u64,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 {
        return proof.is_empty();
    }
    consistency_roots(first, second, first_root, proof) == Some((*first_root, *second_root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proof_of_every_size_verifies_and_tampering_fails() {
        for n in 1..40usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let head = root(&leaves);
            for i in 0..n {
                let proof = inclusion_proof(&leaves, i);
                assert_eq!(
                    root_from_proof(&leaves[i], i as u64, n as u64, &proof),
                    Some(head),
                    "n={n} i={i}"
                );
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(root_from_proof(&leaves[i], i as u64, n as u64, &bad), Some(head));
                    // Wrong index or size does not give the same root.
                    assert_ne!(
                        root_from_proof(&leaves[i], ((i + 1) % n) as u64, n as u64, &proof),
                        Some(head)
                    );
                }
                assert_eq!(root_from_proof(&leaves[i], i as u64, i as u64, &proof), None);
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_fork_shows() {
        for n in 1..40usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let head = root(&leaves);
            for m in 1..=n {
                let old = root(&leaves[..m]);
                let proof = consistency_proof(&leaves, m);
                assert!(verify_consistency(m as u64, &old, n as u64, &head, &proof), "m={m} n={n}");
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    bad[proof.len() - 1][0] ^= 1;
                    assert!(!verify_consistency(m as u64, &old, n as u64, &head, &bad), "m={m} n={n}");
                }
                // Another history of the same first m leaves: its root is not a prefix.
                let mut fork = leaves.clone();
                fork[m - 1] = leaf_hash(b"other");
                let fork_old = root(&fork[..m]);
                assert!(!verify_consistency(m as u64, &fork_old, n as u64, &head, &proof));
                if m < n && !(m as u64).is_power_of_two() {
                    // The honest proof names the real prefix root, which is not the fork's.
                    let (first, second) = consistency_roots(m as u64, n as u64, &fork_old, &proof).unwrap();
                    assert_eq!((first, second), (old, head));
                }
            }
        }
        assert!(verify_consistency(0, &[0; 32], 5, &[1; 32], &[]));
        assert_eq!(consistency_roots(3, 2, &[0; 32], &[]), None);
    }

    #[test]
    fn leaf_cannot_pose_as_node() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut concat = a.to_vec();
        concat.extend_from_slice(&b);
        assert_ne!(leaf_hash(&concat), node_hash(&a, &b));
    }
}
