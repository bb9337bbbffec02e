//! The ledger's Merkle history trees: roots, inclusion paths and consistency proofs, plus the
//! O(log n) frontier the writer appends to and an in-memory tree for tests and small tools.
//!
//! The shape is RFC 9162's (a left-full binary tree over the leaves in order) for every tree
//! here; how nodes are hashed is a [`TreeHashing`]. The ledger's own tree uses CCF's hashing
//! ([`Ccf`], the default everywhere): leaves enter the tree as given, with no `0x00` prefix and
//! no hashing, and an interior node is `SHA256(left || right)` with no `0x01` prefix. Receipts
//! and root signatures issued by CCF and Azure confidential ledger are computed this way, so
//! ours must be too. Without domain separation an interior node can pose as a leaf of a smaller
//! tree, so a root vouches for a tree *size* only through whatever signs it (the ledger's
//! signature transactions); [`verify_inclusion`] and [`verify_consistency`] therefore take the
//! sizes as trusted inputs and check that a proof has exactly the shape those sizes imply.
//!
//! C2SP checkpoints and witnesses speak RFC 6962 ([`Rfc6962`]: leaf `SHA256(0x00 || data)`,
//! node `SHA256(0x01 || left || right)`), so the ledger keeps a second tree with that hashing
//! over the same leaves; [`rfc6962`] has its functions. The algorithms are written once, in
//! [`generic`], over the hashing; the functions at the top of this module are CCF's.
//!
//! Storage is the caller's business: everything that reads the tree goes through
//! [`NodeSource`], which only ever hands out *full, aligned* subtrees (already hashed the way
//! the tree is). The ragged right edge of a tree whose size is not a power of two is recomputed
//! from those on demand, so every operation here costs O(log n) reads and O(log n) hashes.
//! Nothing here knows about the ledger's conventions (such as leaf 0 being the zero hash);
//! leaves are just appended values.

use crate::hash::{Hash32, hash_children, sha256_concat};
use std::marker::PhantomData;

/// How a tree hashes its leaves and interior nodes. The shape, the proofs and their checks
/// are the same for every hashing; only these two functions differ.
pub trait TreeHashing {
    /// The leaf hash of a ledger leaf (the 32-byte CCF leaf of a transaction).
    fn leaf(data: &Hash32) -> Hash32;
    /// An interior node over two subtrees.
    fn children(left: &Hash32, right: &Hash32) -> Hash32;
}

/// CCF's hashing: leaves as given, nodes `SHA256(left || right)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ccf;

impl TreeHashing for Ccf {
    fn leaf(data: &Hash32) -> Hash32 {
        *data
    }

    fn children(left: &Hash32, right: &Hash32) -> Hash32 {
        hash_children(left, right)
    }
}

/// RFC 6962's hashing: leaves `SHA256(0x00 || data)`, nodes `SHA256(0x01 || left || right)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rfc6962;

impl TreeHashing for Rfc6962 {
    fn leaf(data: &Hash32) -> Hash32 {
        rfc6962::leaf_hash(&data.0)
    }

    fn children(left: &Hash32, right: &Hash32) -> Hash32 {
        sha256_concat(&[&[0x01], &left.0, &right.0])
    }
}

/// One step of an inclusion path, leaf to root: which side the sibling sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofStep {
    /// The sibling is on the left: `cur = H(sibling || cur)`.
    Left(Hash32),
    /// The sibling is on the right: `cur = H(cur || sibling)`.
    Right(Hash32),
}

impl ProofStep {
    pub fn hash(&self) -> Hash32 {
        match self {
            ProofStep::Left(h) | ProofStep::Right(h) => *h,
        }
    }

    fn side(&self) -> Side {
        match self {
            ProofStep::Left(_) => Side::Left,
            ProofStep::Right(_) => Side::Right,
        }
    }
}

/// Read access to hashes of *full, aligned* subtrees: the subtree at `level` (height) and
/// `index` covers leaves `[index << level, (index + 1) << level)`; level 0 is the leaves.
///
/// The functions of this module only ask for subtrees that lie entirely inside the `size` they
/// are given, and never for a size beyond [`NodeSource::stored_size`].
pub trait NodeSource {
    type Error;

    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash32, Self::Error>;

    /// How many leaves the source holds, if it knows. When it does, requests for larger trees
    /// fail with [`ProofError::BeyondSource`] before any node is read.
    fn stored_size(&self) -> Option<u64> {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    #[error("reading a stored Merkle subtree failed")]
    Source(#[source] E),
    #[error("the empty tree has no root and proves nothing")]
    EmptyTree,
    #[error("leaf {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("no consistency proof from size {old_size} to size {new_size}: need 0 < old <= new")]
    BadSizes { old_size: u64, new_size: u64 },
    #[error("a tree of {size} leaves was asked of a source holding {stored}")]
    BeyondSource { size: u64, stored: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the empty tree has no root and proves nothing")]
    EmptyTree,
    #[error("leaf {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("no consistency proof from size {old_size} to size {new_size}: need 0 < old <= new")]
    BadSizes { old_size: u64, new_size: u64 },
    #[error("proof has {actual} hashes where {expected} were expected")]
    ProofLength { expected: usize, actual: usize },
    #[error("inclusion path step {step} has its sibling on the wrong side")]
    PathShape { step: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("the consistency proof does not lead to the old root")]
    OldRootMismatch,
    #[error("the consistency proof does not lead to the new root")]
    NewRootMismatch,
}

/// The algorithms, once, for any [`TreeHashing`]. Callers name the hashing:
/// `generic::root::<Rfc6962, _>(src, size)`; [`rfc6962`] and the top of this module wrap them.
pub mod generic {
    use super::*;

    /// Folds `path` onto `leaf`; an empty path gives back `leaf`. This checks nothing by itself.
    pub fn fold_path<H: TreeHashing>(leaf: Hash32, path: &[ProofStep]) -> Hash32 {
        path.iter().fold(leaf, |cur, step| match step {
            ProofStep::Left(sibling) => H::children(sibling, &cur),
            ProofStep::Right(sibling) => H::children(&cur, sibling),
        })
    }

    /// The root of the first `size` leaves of `src`.
    pub fn root<H: TreeHashing, S: NodeSource>(
        src: &S,
        size: u64,
    ) -> Result<Hash32, ProofError<S::Error>> {
        check_size(src, size)?;
        range_root::<H, S>(src, 0, size)
    }

    /// The RFC 9162 `PATH(leaf_index, D[size])`, ordered leaf to root.
    pub fn inclusion_path<H: TreeHashing, S: NodeSource>(
        src: &S,
        leaf_index: u64,
        size: u64,
    ) -> Result<Vec<ProofStep>, ProofError<S::Error>> {
        check_size(src, size)?;
        if leaf_index >= size {
            return Err(ProofError::IndexOutOfRange {
                index: leaf_index,
                size,
            });
        }
        // Walk the RFC recursion top-down over the subrange [start, start + len) that holds the
        // leaf, then reverse. Once the walk turns left the subrange is a perfect subtree, so at
        // most one sibling (the ragged right edge) needs more than a single read.
        let mut steps = Vec::with_capacity(64);
        let (mut start, mut len, mut index) = (0u64, size, leaf_index);
        while len > 1 {
            let k = split(len);
            if index < k {
                steps.push(ProofStep::Right(range_root::<H, S>(
                    src,
                    start + k,
                    len - k,
                )?));
                len = k;
            } else {
                steps.push(ProofStep::Left(range_root::<H, S>(src, start, k)?));
                start += k;
                len -= k;
                index -= k;
            }
        }
        steps.reverse();
        Ok(steps)
    }

    /// The RFC 9162 `PROOF(old_size, D[new_size])` (§2.1.4.1), ordered as the RFC orders it.
    /// Equal sizes give the empty proof.
    pub fn consistency_proof<H: TreeHashing, S: NodeSource>(
        src: &S,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash32>, ProofError<S::Error>> {
        if old_size == 0 || old_size > new_size {
            return Err(ProofError::BadSizes { old_size, new_size });
        }
        check_size(src, new_size)?;
        // SUBPROOF(m, D[start..start+len], whole), top-down; `whole` is the RFC's `b`: whether the
        // old tree's root is (still) known to the verifier as one of its inputs.
        let mut proof = Vec::with_capacity(64);
        let (mut start, mut len, mut m, mut whole) = (0u64, new_size, old_size, true);
        while m != len {
            let k = split(len);
            if m <= k {
                proof.push(range_root::<H, S>(src, start + k, len - k)?);
                len = k;
            } else {
                proof.push(range_root::<H, S>(src, start, k)?);
                start += k;
                len -= k;
                m -= k;
                whole = false;
            }
        }
        if !whole {
            proof.push(range_root::<H, S>(src, start, len)?);
        }
        proof.reverse();
        Ok(proof)
    }

    /// Checks that `path` proves `leaf` at `leaf_index` in the tree of `size` leaves with `root`.
    /// The path must have exactly the length and left/right pattern that `(leaf_index, size)`
    /// implies, so one path cannot be passed off for a different position in the same tree.
    pub fn verify_inclusion<H: TreeHashing>(
        leaf: Hash32,
        leaf_index: u64,
        size: u64,
        path: &[ProofStep],
        root: Hash32,
    ) -> Result<(), VerifyError> {
        if size == 0 {
            return Err(VerifyError::EmptyTree);
        }
        if leaf_index >= size {
            return Err(VerifyError::IndexOutOfRange {
                index: leaf_index,
                size,
            });
        }
        let expected = path_shape(leaf_index, size).count();
        if path.len() != expected {
            return Err(VerifyError::ProofLength {
                expected,
                actual: path.len(),
            });
        }
        if let Some(step) = path
            .iter()
            .zip(path_shape(leaf_index, size))
            .position(|(step, side)| step.side() != side)
        {
            return Err(VerifyError::PathShape { step });
        }
        if fold_path::<H>(leaf, path) != root {
            return Err(VerifyError::RootMismatch);
        }
        Ok(())
    }

    /// Checks that `proof` shows the tree of `new_size` leaves with `new_root` extends the tree of
    /// `old_size` leaves with `old_root` (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and
    /// equal roots.
    pub fn verify_consistency<H: TreeHashing>(
        old_size: u64,
        new_size: u64,
        old_root: Hash32,
        new_root: Hash32,
        proof: &[Hash32],
    ) -> Result<(), VerifyError> {
        if old_size == 0 || old_size > new_size {
            return Err(VerifyError::BadSizes { old_size, new_size });
        }
        // The RFC's loop rejects wrong lengths on its own; checking up front gives a clear error
        // and means the loop below can never run off either end.
        let expected = consistency_len(old_size, new_size);
        let wrong_length = || VerifyError::ProofLength {
            expected,
            actual: proof.len(),
        };
        if proof.len() != expected {
            return Err(wrong_length());
        }
        if old_size == new_size {
            return if old_root == new_root {
                Ok(())
            } else {
                Err(VerifyError::RootMismatch)
            };
        }

        let mut rest = proof.iter();
        // A power-of-two old tree is a subtree of the new one, so the prover leaves its root out.
        let first = if old_size.is_power_of_two() {
            old_root
        } else {
            *rest.next().ok_or_else(wrong_length)?
        };
        let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
        while fn_ & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
        }
        let (mut fr, mut sr) = (first, first);
        for c in rest {
            if sn == 0 {
                return Err(wrong_length());
            }
            if fn_ & 1 == 1 || fn_ == sn {
                fr = H::children(c, &fr);
                sr = H::children(c, &sr);
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            } else {
                sr = H::children(&sr, c);
            }
            fn_ >>= 1;
            sn >>= 1;
        }
        if sn != 0 {
            return Err(wrong_length());
        }
        if fr != old_root {
            return Err(VerifyError::OldRootMismatch);
        }
        if sr != new_root {
            return Err(VerifyError::NewRootMismatch);
        }
        Ok(())
    }
}

/// Folds `path` onto `leaf` with CCF's hashing; an empty path gives back `leaf`. This checks
/// nothing by itself.
pub fn fold_path(leaf: Hash32, path: &[ProofStep]) -> Hash32 {
    generic::fold_path::<Ccf>(leaf, path)
}

/// The root (CCF hashing) of the first `size` leaves of `src`.
pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash32, ProofError<S::Error>> {
    generic::root::<Ccf, S>(src, size)
}

/// The RFC 9162 `PATH(leaf_index, D[size])` of the CCF tree, ordered leaf to root.
pub fn inclusion_path<S: NodeSource>(
    src: &S,
    leaf_index: u64,
    size: u64,
) -> Result<Vec<ProofStep>, ProofError<S::Error>> {
    generic::inclusion_path::<Ccf, S>(src, leaf_index, size)
}

/// The RFC 9162 `PROOF(old_size, D[new_size])` of the CCF tree (§2.1.4.1).
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash32>, ProofError<S::Error>> {
    generic::consistency_proof::<Ccf, S>(src, old_size, new_size)
}

/// [`generic::verify_inclusion`] with CCF's hashing.
pub fn verify_inclusion(
    leaf: Hash32,
    leaf_index: u64,
    size: u64,
    path: &[ProofStep],
    root: Hash32,
) -> Result<(), VerifyError> {
    generic::verify_inclusion::<Ccf>(leaf, leaf_index, size, path, root)
}

/// [`generic::verify_consistency`] with CCF's hashing.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: Hash32,
    new_root: Hash32,
    proof: &[Hash32],
) -> Result<(), VerifyError> {
    generic::verify_consistency::<Ccf>(old_size, new_size, old_root, new_root, proof)
}

/// The RFC 6962 tree (C2SP checkpoints, witnesses): leaf hashes are `SHA256(0x00 || data)`,
/// nodes `SHA256(0x01 || left || right)`. Sources hand out subtrees hashed that way; the leaf
/// of the ledger's seqno *i* is [`leaf_hash`] of the 32-byte CCF leaf of *i*.
pub mod rfc6962 {
    use super::*;

    /// The tree with RFC 6962 hashing kept whole in memory.
    pub type MemoryTree = super::MemoryTree<Rfc6962>;
    /// The frontier of the RFC 6962 tree.
    pub type Frontier = super::Frontier<Rfc6962>;

    /// RFC 6962 §2.1: `MTH({}) = SHA-256()`, the root of the empty tree, which the functions
    /// here refuse to compute (a ledger is never empty: leaf 0 is there from the start).
    pub const EMPTY_ROOT: Hash32 = Hash32([
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9,
        0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52,
        0xb8, 0x55,
    ]);

    /// `SHA256(0x00 || data)`: the leaf hash of any leaf input.
    pub fn leaf_hash(data: &[u8]) -> Hash32 {
        sha256_concat(&[&[0x00], data])
    }

    pub fn fold_path(leaf: Hash32, path: &[ProofStep]) -> Hash32 {
        generic::fold_path::<Rfc6962>(leaf, path)
    }

    pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash32, ProofError<S::Error>> {
        generic::root::<Rfc6962, S>(src, size)
    }

    pub fn inclusion_path<S: NodeSource>(
        src: &S,
        leaf_index: u64,
        size: u64,
    ) -> Result<Vec<ProofStep>, ProofError<S::Error>> {
        generic::inclusion_path::<Rfc6962, S>(src, leaf_index, size)
    }

    /// RFC 6962 §2.1.2 `PROOF(m, D[n])`: the proof C2SP witnesses check (`old` → checkpoint).
    pub fn consistency_proof<S: NodeSource>(
        src: &S,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash32>, ProofError<S::Error>> {
        generic::consistency_proof::<Rfc6962, S>(src, old_size, new_size)
    }

    pub fn verify_inclusion(
        leaf: Hash32,
        leaf_index: u64,
        size: u64,
        path: &[ProofStep],
        root: Hash32,
    ) -> Result<(), VerifyError> {
        generic::verify_inclusion::<Rfc6962>(leaf, leaf_index, size, path, root)
    }

    pub fn verify_consistency(
        old_size: u64,
        new_size: u64,
        old_root: Hash32,
        new_root: Hash32,
        proof: &[Hash32],
    ) -> Result<(), VerifyError> {
        generic::verify_consistency::<Rfc6962>(old_size, new_size, old_root, new_root, proof)
    }
}

/// The roots of the perfect subtrees that make up the tree (one per set bit of its size,
/// largest first): all a writer needs to keep in memory to append and to compute the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontier<H = Ccf> {
    size: u64,
    // peaks[i] is the root of the subtree for the i-th set bit of `size`, from the top.
    peaks: Vec<Hash32>,
    hashing: PhantomData<H>,
}

impl<H> Default for Frontier<H> {
    fn default() -> Self {
        Frontier {
            size: 0,
            peaks: Vec::new(),
            hashing: PhantomData,
        }
    }
}

impl Frontier<Ccf> {
    /// An empty frontier of a CCF tree (`Frontier::<H>::default()` for another hashing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The frontier of the first `size` leaves of the CCF tree `src`, read in O(log n)
    /// subtree reads (`Frontier::<H>::read` for another hashing).
    pub fn from_source<S: NodeSource>(src: &S, size: u64) -> Result<Self, ProofError<S::Error>> {
        Self::read(src, size)
    }
}

impl<H: TreeHashing> Frontier<H> {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `leaf` and pushes onto `completed` every full subtree `(level, index, hash)` the
    /// append completed: the leaf itself first, then upwards. A frontier already holding
    /// `u64::MAX` leaves cannot grow; it is then left as is and `completed` gets nothing.
    pub fn push(&mut self, leaf: Hash32, completed: &mut Vec<(u32, u64, Hash32)>) {
        let Some(new_size) = self.size.checked_add(1) else {
            return;
        };
        let leaf_index = self.size;
        completed.push((0, leaf_index, leaf));
        let (mut cur, mut level) = (leaf, 0u32);
        // Each trailing one bit of the old size is a peak of the height `cur` has reached.
        while (leaf_index >> level) & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            cur = H::children(&left, &cur);
            level += 1;
            completed.push((level, leaf_index >> level, cur));
        }
        self.peaks.push(cur);
        self.size = new_size;
    }

    /// The tree's root, or `None` while it is empty.
    pub fn root(&self) -> Option<Hash32> {
        let mut peaks = self.peaks.iter().rev();
        let last = *peaks.next()?;
        Some(peaks.fold(last, |acc, peak| H::children(peak, &acc)))
    }

    /// The frontier of the first `size` leaves of `src`, read in O(log n) subtree reads (the
    /// generic form of [`Frontier::from_source`]).
    pub fn read<S: NodeSource>(src: &S, size: u64) -> Result<Self, ProofError<S::Error>> {
        if let Some(stored) = src.stored_size()
            && size > stored
        {
            return Err(ProofError::BeyondSource { size, stored });
        }
        let peaks = peak_positions(size)
            .map(|(level, index)| src.subtree_hash(level, index).map_err(ProofError::Source))
            .collect::<Result<_, _>>()?;
        Ok(Frontier {
            size,
            peaks,
            hashing: PhantomData,
        })
    }

    /// `(level, index, hash)` of every peak, largest (leftmost) first.
    pub fn peaks(&self) -> impl Iterator<Item = (u32, u64, Hash32)> + '_ {
        peak_positions(self.size)
            .zip(&self.peaks)
            .map(|((level, index), hash)| (level, index, *hash))
    }
}

/// A tree that keeps every full subtree in memory (`levels[level][index]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryTree<H = Ccf> {
    levels: Vec<Vec<Hash32>>,
    hashing: PhantomData<H>,
}

impl<H> Default for MemoryTree<H> {
    fn default() -> Self {
        MemoryTree {
            levels: Vec::new(),
            hashing: PhantomData,
        }
    }
}

impl MemoryTree<Ccf> {
    /// An empty CCF tree (`MemoryTree::<H>::default()` for another hashing).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<H: TreeHashing> MemoryTree<H> {
    /// Appends a leaf *hash* (for RFC 6962, already `SHA256(0x00 || data)`).
    pub fn push(&mut self, leaf: Hash32) {
        let mut cur = leaf;
        for level in 0.. {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(cur);
            match row.as_slice() {
                // An even count means the new node completed a pair one level up.
                [.., left, right] if row.len().is_multiple_of(2) => cur = H::children(left, right),
                _ => return,
            }
        }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    pub fn root(&self) -> Option<Hash32> {
        generic::root::<H, _>(self, self.size()).ok()
    }
}

impl<H: TreeHashing> NodeSource for MemoryTree<H> {
    type Error = std::convert::Infallible;

    /// # Panics
    /// If the subtree is not complete in this tree. The functions of this module never ask for
    /// one, because [`NodeSource::stored_size`] lets them refuse such requests up front.
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash32, Self::Error> {
        let node = usize::try_from(level)
            .ok()
            .and_then(|level| self.levels.get(level))
            .zip(usize::try_from(index).ok())
            .and_then(|(row, index)| row.get(index));
        match node {
            Some(hash) => Ok(*hash),
            None => panic!("MemoryTree holds no full subtree at level {level}, index {index}"),
        }
    }

    fn stored_size(&self) -> Option<u64> {
        Some(self.size())
    }
}

fn check_size<S: NodeSource>(src: &S, size: u64) -> Result<(), ProofError<S::Error>> {
    if size == 0 {
        return Err(ProofError::EmptyTree);
    }
    match src.stored_size() {
        Some(stored) if size > stored => Err(ProofError::BeyondSource { size, stored }),
        _ => Ok(()),
    }
}

/// RFC 9162's `k`: the largest power of two strictly below `n`. Needs `n >= 2`.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// `(level, index)` of the peaks of a tree of `size` leaves, largest (leftmost) first.
fn peak_positions(size: u64) -> impl Iterator<Item = (u32, u64)> {
    (0..u64::BITS)
        .rev()
        .filter(move |level| (size >> level) & 1 == 1)
        // The leaves left of a peak are the bits of `size` above its level, so in units of its
        // width it starts at those bits shifted down (an even index).
        .map(move |level| (level, size >> level >> 1 << 1))
}

/// MTH of the `len >= 1` leaves starting at `start`, where `start` is a multiple of the
/// smallest power of two `>= len` (true of every range in the RFC recursion). Such a range is
/// a run of aligned perfect subtrees, one per set bit of `len`, folded right to left.
fn range_root<H: TreeHashing, S: NodeSource>(
    src: &S,
    start: u64,
    len: u64,
) -> Result<Hash32, ProofError<S::Error>> {
    let mut end = start + len;
    let mut acc: Option<Hash32> = None;
    for level in (0..u64::BITS).filter(|level| (len >> level) & 1 == 1) {
        end -= 1 << level;
        let peak = src
            .subtree_hash(level, end >> level)
            .map_err(ProofError::Source)?;
        acc = Some(match acc {
            None => peak,
            Some(right) => H::children(&peak, &right),
        });
    }
    acc.ok_or(ProofError::EmptyTree)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// The steps of an RFC 9162 audit path (sibling hashes only, leaf to root, as RFC 9162 and
/// C2SP proofs carry it) for the leaf at `index` of a tree of `size` leaves: the sides follow
/// from the position. `None` if the path does not have the length that position implies.
pub fn audit_path_steps(index: u64, size: u64, hashes: &[Hash32]) -> Option<Vec<ProofStep>> {
    if index >= size || path_shape(index, size).count() != hashes.len() {
        return None;
    }
    Some(
        path_shape(index, size)
            .zip(hashes)
            .map(|(side, hash)| match side {
                Side::Left => ProofStep::Left(*hash),
                Side::Right => ProofStep::Right(*hash),
            })
            .collect(),
    )
}

/// The sibling sides of `PATH(index, D[size])`, leaf to root, by RFC 9162 §2.1.3.2's walk.
/// Needs `index < size`.
fn path_shape(index: u64, size: u64) -> impl Iterator<Item = Side> {
    let (mut fn_, mut sn) = (index, size - 1);
    std::iter::from_fn(move || {
        if sn == 0 {
            return None;
        }
        let side = if fn_ & 1 == 1 || fn_ == sn {
            // The last node of a level with no right sibling is carried up unchanged.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
            Side::Left
        } else {
            Side::Right
        };
        fn_ >>= 1;
        sn >>= 1;
        Some(side)
    })
}

/// Length of `PROOF(old_size, D[new_size])`. Needs `0 < old_size <= new_size`.
fn consistency_len(old_size: u64, new_size: u64) -> usize {
    let (mut len, mut m, mut whole, mut count) = (new_size, old_size, true, 0);
    while m != len {
        let k = split(len);
        count += 1;
        if m <= k {
            len = k;
        } else {
            len -= k;
            m -= k;
            whole = false;
        }
    }
    count + usize::from(!whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::convert::Infallible;
    use std::sync::OnceLock;

    // RFC 9162 §2.1 taken literally (MTH, PATH, SUBPROOF), over a hashing of nodes.
    fn rfc_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn rfc_mth_in<H: TreeHashing>(d: &[Hash32]) -> Hash32 {
        match d.len() {
            0 => panic!("MTH of nothing"),
            1 => d[0],
            n => H::children(
                &rfc_mth_in::<H>(&d[..rfc_k(n)]),
                &rfc_mth_in::<H>(&d[rfc_k(n)..]),
            ),
        }
    }

    fn rfc_path_in<H: TreeHashing>(m: usize, d: &[Hash32]) -> Vec<ProofStep> {
        if d.len() == 1 {
            return vec![];
        }
        let k = rfc_k(d.len());
        let (mut path, step) = if m < k {
            (
                rfc_path_in::<H>(m, &d[..k]),
                ProofStep::Right(rfc_mth_in::<H>(&d[k..])),
            )
        } else {
            (
                rfc_path_in::<H>(m - k, &d[k..]),
                ProofStep::Left(rfc_mth_in::<H>(&d[..k])),
            )
        };
        path.push(step);
        path
    }

    fn rfc_subproof_in<H: TreeHashing>(m: usize, d: &[Hash32], b: bool) -> Vec<Hash32> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![rfc_mth_in::<H>(d)] };
        }
        let k = rfc_k(n);
        let (mut proof, h) = if m <= k {
            (
                rfc_subproof_in::<H>(m, &d[..k], b),
                rfc_mth_in::<H>(&d[k..]),
            )
        } else {
            (
                rfc_subproof_in::<H>(m - k, &d[k..], false),
                rfc_mth_in::<H>(&d[..k]),
            )
        };
        proof.push(h);
        proof
    }

    fn rfc_mth(d: &[Hash32]) -> Hash32 {
        rfc_mth_in::<Ccf>(d)
    }

    fn rfc_path(m: usize, d: &[Hash32]) -> Vec<ProofStep> {
        rfc_path_in::<Ccf>(m, d)
    }

    fn rfc_subproof(m: usize, d: &[Hash32], b: bool) -> Vec<Hash32> {
        rfc_subproof_in::<Ccf>(m, d, b)
    }

    /// Leaf 0 is the zero hash, as in every ledger.
    fn leaf_at(i: u64) -> Hash32 {
        if i == 0 {
            Hash32::ZERO
        } else {
            sha256(&i.to_le_bytes())
        }
    }

    fn tree_of(n: u64) -> (Vec<Hash32>, MemoryTree) {
        let leaves: Vec<Hash32> = (0..n).map(leaf_at).collect();
        let mut tree = MemoryTree::new();
        leaves.iter().for_each(|l| tree.push(*l));
        (leaves, tree)
    }

    fn small() -> &'static (Vec<Hash32>, MemoryTree) {
        static TREE: OnceLock<(Vec<Hash32>, MemoryTree)> = OnceLock::new();
        TREE.get_or_init(|| tree_of(2000))
    }

    const BIG: u64 = 100_000;

    fn big() -> &'static MemoryTree {
        static TREE: OnceLock<MemoryTree> = OnceLock::new();
        TREE.get_or_init(|| tree_of(BIG).1)
    }

    /// A few spread-out, reproducible values below `n`.
    fn samples(n: u64, count: u64) -> impl Iterator<Item = u64> {
        let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..count).map(move |_| {
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9).wrapping_add(1);
            x % n
        })
    }

    fn check_inclusion(leaves: &[Hash32], tree: &MemoryTree, index: u64, size: u64) {
        let path = inclusion_path(tree, index, size).unwrap();
        assert_eq!(
            path,
            rfc_path(index as usize, &leaves[..size as usize]),
            "{index} of {size}"
        );
        let root = root(tree, size).unwrap();
        let leaf = leaves[index as usize];
        assert_eq!(fold_path(leaf, &path), root);
        assert_eq!(verify_inclusion(leaf, index, size, &path, root), Ok(()));
    }

    fn check_consistency(leaves: &[Hash32], tree: &MemoryTree, old: u64, new: u64) {
        let proof = consistency_proof(tree, old, new).unwrap();
        let d = &leaves[..new as usize];
        assert_eq!(proof, rfc_subproof(old as usize, d, true), "{old} -> {new}");
        let (old_root, new_root) = (root(tree, old).unwrap(), root(tree, new).unwrap());
        assert_eq!(
            verify_consistency(old, new, old_root, new_root, &proof),
            Ok(())
        );
    }

    #[test]
    fn roots_match_the_rfc_for_every_size_up_to_2000() {
        let (leaves, tree) = small();
        let mut frontier = Frontier::new();
        let mut completed = Vec::new();
        for size in 1..=leaves.len() {
            frontier.push(leaves[size - 1], &mut completed);
            let expected = rfc_mth(&leaves[..size]);
            assert_eq!(root(tree, size as u64).unwrap(), expected, "size {size}");
            assert_eq!(frontier.root(), Some(expected), "size {size}");
        }
        assert_eq!(tree.root(), frontier.root());
    }

    #[test]
    fn inclusion_paths_match_the_rfc() {
        let (leaves, tree) = small();
        for size in 1..=300 {
            for index in 0..size {
                check_inclusion(leaves, tree, index, size);
            }
        }
        for size in 301..=leaves.len() as u64 {
            for index in [0, 1, size / 2, size - 2, size - 1]
                .into_iter()
                .chain(samples(size, 3))
            {
                check_inclusion(leaves, tree, index, size);
            }
        }
    }

    /// Which check rejects a wrong root, for every pair of sizes up to 64.
    #[test]
    fn wrong_roots_are_rejected_by_the_right_check() {
        let tree = big();
        for new in 2..=64u64 {
            for old in 1..new {
                let (old_root, new_root) = (root(tree, old).unwrap(), root(tree, new).unwrap());
                let proof = consistency_proof(tree, old, new).unwrap();
                let mut bad_old = old_root;
                bad_old.0[0] ^= 1;
                let mut bad_new = new_root;
                bad_new.0[31] ^= 0x80;
                // A power-of-two old tree is the first node of the path itself, so a wrong
                // old root there can only show as a wrong new root.
                let wrong_old = if old.is_power_of_two() {
                    VerifyError::NewRootMismatch
                } else {
                    VerifyError::OldRootMismatch
                };
                assert_eq!(
                    verify_consistency(old, new, bad_old, new_root, &proof),
                    Err(wrong_old),
                    "{old}->{new}"
                );
                assert_eq!(
                    verify_consistency(old, new, old_root, bad_new, &proof),
                    Err(VerifyError::NewRootMismatch),
                    "{old}->{new}"
                );
            }
        }
    }

    #[test]
    fn consistency_proofs_match_the_rfc() {
        let (leaves, tree) = small();
        for new in 1..=64 {
            for old in 1..=new {
                check_consistency(leaves, tree, old, new);
            }
        }
        for new in (65..=leaves.len() as u64).step_by(3) {
            let powers = (0..11).map(|b| 1u64 << b).filter(|&p| p <= new);
            for old in [1, 2, new / 2, new - 1, new]
                .into_iter()
                .chain(powers)
                .chain(samples(new, 3))
            {
                check_consistency(leaves, tree, old.max(1), new);
            }
        }
    }

    #[test]
    fn ccf_root_for_13_leaves() {
        // Leaf 0 is the zero hash and leaf i is SHA256 of the single byte i, as a CCF service
        // with 12 transactions would have it; we only know the ends of CCF's root.
        let mut tree = MemoryTree::new();
        let mut frontier = Frontier::new();
        for i in 0u8..13 {
            let leaf = if i == 0 { Hash32::ZERO } else { sha256(&[i]) };
            tree.push(leaf);
            frontier.push(leaf, &mut Vec::new());
        }
        let root = tree.root().unwrap().to_hex();
        assert!(
            root.starts_with("eff3c9de") && root.ends_with("9d6e"),
            "{root}"
        );
        assert_eq!(frontier.root().unwrap().to_hex(), root);
    }

    #[test]
    fn frontier_reports_exactly_the_stored_subtrees() {
        let (leaves, tree) = small();
        let mut frontier = Frontier::new();
        let mut completed = Vec::new();
        for (i, leaf) in (0u64..).zip(leaves) {
            completed.clear();
            frontier.push(*leaf, &mut completed);
            // Leaf i completes itself, then one subtree per trailing one bit of i: each level
            // at which it is the last leaf of an aligned block.
            let expected: Vec<_> = (0..=i.trailing_ones())
                .map(|level| {
                    (
                        level,
                        i >> level,
                        tree.subtree_hash(level, i >> level).unwrap(),
                    )
                })
                .collect();
            assert_eq!(completed, expected, "leaf {i}");

            let rebuilt = Frontier::from_source(tree, i + 1).unwrap();
            assert_eq!(rebuilt, frontier);
            assert_eq!(
                rebuilt.peaks().collect::<Vec<_>>(),
                frontier.peaks().collect::<Vec<_>>()
            );
        }
        // Every stored node was reported exactly once over the whole run.
        let stored: usize = tree.levels.iter().map(Vec::len).sum();
        let reported: usize = (0..leaves.len() as u64)
            .map(|i| i.trailing_ones() as usize + 1)
            .sum();
        assert_eq!(stored, reported);
        // The peaks are the aligned subtrees spelled by the bits of the size.
        let peaks: Vec<_> = frontier
            .peaks()
            .map(|(level, index, _)| (level, index))
            .collect();
        assert_eq!(peaks, [(10, 0), (9, 2), (8, 6), (7, 14), (6, 30), (4, 124)]);
    }

    /// A tree of any size whose leaves are all equal, so a full subtree's hash depends on its
    /// height alone. It lets the u64 edges be exercised, and counts reads.
    struct Uniform {
        by_level: [Hash32; 64],
        reads: Cell<u64>,
    }

    impl Uniform {
        fn new() -> Self {
            let mut by_level = [sha256(b"leaf"); 64];
            for level in 1..64 {
                by_level[level] = hash_children(&by_level[level - 1], &by_level[level - 1]);
            }
            Uniform {
                by_level,
                reads: Cell::new(0),
            }
        }

        fn take_reads(&self) -> u64 {
            self.reads.replace(0)
        }
    }

    impl NodeSource for Uniform {
        type Error = Infallible;
        fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash32, Infallible> {
            assert!(
                level < 64 && index.checked_shl(level).is_some(),
                "({level}, {index})"
            );
            self.reads.set(self.reads.get() + 1);
            Ok(self.by_level[level as usize])
        }
    }

    #[test]
    fn huge_trees_cost_logarithmic_reads_and_do_not_overflow() {
        let src = Uniform::new();
        let leaf = src.by_level[0];
        let sizes = [
            1,
            2,
            3,
            1 << 32,
            (1 << 63) - 1,
            1 << 63,
            (1 << 63) + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &size in sizes
            .iter()
            .chain(&[0x5555_5555_5555_5555, 0xdead_beef_0000_0001])
        {
            src.take_reads();
            let r = root(&src, size).unwrap();
            assert!(src.take_reads() <= 64);
            let frontier = Frontier::from_source(&src, size).unwrap();
            assert_eq!(frontier.root(), Some(r));
            assert_eq!(frontier.size(), size);

            for index in [0, size / 3, size / 2, size - 1] {
                src.take_reads();
                let path = inclusion_path(&src, index, size).unwrap();
                assert!(src.take_reads() <= 2 * 64, "inclusion {index} of {size}");
                assert_eq!(verify_inclusion(leaf, index, size, &path, r), Ok(()));
            }
            for old in [1, 2, 3, size / 2, size - 1, size]
                .into_iter()
                .filter(|&o| 1 <= o && o <= size)
            {
                src.take_reads();
                let proof = consistency_proof(&src, old, size).unwrap();
                assert!(src.take_reads() <= 2 * 64, "consistency {old} -> {size}");
                let old_root = root(&src, old).unwrap();
                assert_eq!(verify_consistency(old, size, old_root, r, &proof), Ok(()));
            }
        }
    }

    #[test]
    fn a_full_frontier_refuses_to_grow() {
        let src = Uniform::new();
        let mut completed = Vec::new();
        let mut frontier = Frontier::from_source(&src, u64::MAX - 1).unwrap();
        frontier.push(src.by_level[0], &mut completed);
        assert_eq!(completed, [(0, u64::MAX - 1, src.by_level[0])]);
        assert_eq!(frontier, Frontier::from_source(&src, u64::MAX).unwrap());

        completed.clear();
        frontier.push(src.by_level[0], &mut completed);
        assert!(completed.is_empty());
        assert_eq!(frontier.size(), u64::MAX);
    }

    #[test]
    fn bad_requests_are_errors() {
        let tree = &small().1;
        assert!(matches!(root(tree, 0), Err(ProofError::EmptyTree)));
        assert!(matches!(
            root(tree, 2001),
            Err(ProofError::BeyondSource {
                size: 2001,
                stored: 2000
            })
        ));
        assert!(matches!(
            inclusion_path(tree, 5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        ));
        assert!(matches!(
            inclusion_path(tree, 0, 0),
            Err(ProofError::EmptyTree)
        ));
        assert!(matches!(
            inclusion_path(tree, 0, u64::MAX),
            Err(ProofError::BeyondSource { .. })
        ));
        for (old, new) in [(0, 0), (0, 5), (6, 5), (u64::MAX, 1)] {
            assert!(matches!(
                consistency_proof(tree, old, new),
                Err(ProofError::BadSizes { .. })
            ));
        }
        assert!(matches!(
            consistency_proof(tree, 1, 2001),
            Err(ProofError::BeyondSource { .. })
        ));
        assert!(matches!(
            Frontier::from_source(tree, 2001),
            Err(ProofError::BeyondSource { .. })
        ));
        assert_eq!(MemoryTree::new().root(), None);
        assert_eq!(Frontier::new().root(), None);
        assert_eq!(Frontier::from_source(tree, 0).unwrap(), Frontier::new());

        struct Broken;
        impl NodeSource for Broken {
            type Error = std::fmt::Error;
            fn subtree_hash(&self, _: u32, _: u64) -> Result<Hash32, std::fmt::Error> {
                Err(std::fmt::Error)
            }
        }
        assert!(matches!(
            root(&Broken, 7),
            Err(ProofError::Source(std::fmt::Error))
        ));
        assert!(matches!(
            inclusion_path(&Broken, 3, 7),
            Err(ProofError::Source(_))
        ));
        assert!(matches!(
            consistency_proof(&Broken, 3, 7),
            Err(ProofError::Source(_))
        ));
        assert!(matches!(
            Frontier::from_source(&Broken, 7),
            Err(ProofError::Source(_))
        ));
        assert_eq!(consistency_proof(&Broken, 7, 7).unwrap(), []);

        let h = Hash32::ZERO;
        assert_eq!(
            verify_inclusion(h, 0, 0, &[], h),
            Err(VerifyError::EmptyTree)
        );
        assert_eq!(
            verify_inclusion(h, u64::MAX, u64::MAX, &[], h),
            Err(VerifyError::IndexOutOfRange {
                index: u64::MAX,
                size: u64::MAX
            })
        );
        for (old, new) in [(0, 0), (0, 1), (2, 1), (u64::MAX, 0)] {
            assert_eq!(
                verify_consistency(old, new, h, h, &[]),
                Err(VerifyError::BadSizes {
                    old_size: old,
                    new_size: new
                })
            );
        }
        // A single-leaf tree's root is the leaf, with nothing to prove.
        assert_eq!(verify_inclusion(h, 0, 1, &[], h), Ok(()));
        assert_eq!(verify_consistency(9, 9, h, h, &[]), Ok(()));
        assert_eq!(
            verify_consistency(9, 9, h, leaf_at(1), &[]),
            Err(VerifyError::RootMismatch)
        );
        assert!(matches!(
            verify_consistency(9, 9, h, h, &[h]),
            Err(VerifyError::ProofLength { .. })
        ));
        assert!(matches!(
            verify_consistency(1, 2, h, h, &[]),
            Err(VerifyError::ProofLength { .. })
        ));
        assert!(matches!(
            verify_inclusion(h, 0, u64::MAX, &[ProofStep::Right(h); 100], h),
            Err(VerifyError::ProofLength {
                expected: 64,
                actual: 100
            })
        ));
    }

    #[test]
    fn sizes_are_bound_only_by_the_roots() {
        // Unprefixed hashing lets an interior node stand in for a leaf, so the same path over
        // [l0, l1, H(l2 || l3)] proves leaf 0 of a 3-leaf tree with the 4-leaf root. This is
        // why the sizes given to the verifiers must come from the signed root they check.
        let (leaves, tree) = small();
        let path = inclusion_path(tree, 0, 4).unwrap();
        let root4 = root(tree, 4).unwrap();
        assert_eq!(verify_inclusion(leaves[0], 0, 3, &path, root4), Ok(()));
        // Likewise a consistency proof only depends on the sizes' low bits after scaling.
        let proof = consistency_proof(tree, 36, 40).unwrap();
        let (r36, r40) = (root(tree, 36).unwrap(), root(tree, 40).unwrap());
        assert_eq!(verify_consistency(18, 20, r36, r40, &proof), Ok(()));
    }

    #[test]
    #[should_panic(expected = "no full subtree")]
    fn memory_tree_refuses_direct_reads_past_its_end() {
        let _ = small().1.subtree_hash(11, 0);
    }

    fn flip(h: Hash32, bit: usize) -> Hash32 {
        let mut bytes = h.0;
        bytes[bit / 8] ^= 1 << (bit % 8);
        Hash32(bytes)
    }

    fn size_and_index() -> impl Strategy<Value = (u64, u64)> {
        (1..=BIG).prop_flat_map(|size| (Just(size), 0..size))
    }

    fn old_and_new() -> impl Strategy<Value = (u64, u64)> {
        (1..=BIG).prop_flat_map(|new| (1..=new, Just(new)))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn inclusion_proofs_verify_and_resist_tampering(
            (size, index) in size_and_index(),
            other in 1..=BIG,
        ) {
            let tree = big();
            let leaf = leaf_at(index);
            let root = root(tree, size).unwrap();
            let path = inclusion_path(tree, index, size).unwrap();
            prop_assert_eq!(verify_inclusion(leaf, index, size, &path, root), Ok(()));

            for i in 0..path.len() {
                for bit in 0..256 {
                    let mut bad = path.clone();
                    bad[i] = match bad[i] {
                        ProofStep::Left(h) => ProofStep::Left(flip(h, bit)),
                        ProofStep::Right(h) => ProofStep::Right(flip(h, bit)),
                    };
                    prop_assert_eq!(
                        verify_inclusion(leaf, index, size, &bad, root),
                        Err(VerifyError::RootMismatch)
                    );
                }
                let mut swapped = path.clone();
                swapped[i] = match swapped[i] {
                    ProofStep::Left(h) => ProofStep::Right(h),
                    ProofStep::Right(h) => ProofStep::Left(h),
                };
                prop_assert!(verify_inclusion(leaf, index, size, &swapped, root).is_err());
                let mut dropped = path.clone();
                dropped.remove(i);
                prop_assert!(verify_inclusion(leaf, index, size, &dropped, root).is_err());
            }
            for extra in [ProofStep::Left(root), ProofStep::Right(leaf)] {
                let mut longer = path.clone();
                longer.push(extra);
                prop_assert!(verify_inclusion(leaf, index, size, &longer, root).is_err());
                longer.rotate_right(1);
                prop_assert!(verify_inclusion(leaf, index, size, &longer, root).is_err());
            }
            for bit in [0, 255] {
                prop_assert!(verify_inclusion(flip(leaf, bit), index, size, &path, root).is_err());
                prop_assert!(verify_inclusion(leaf, index, size, &path, flip(root, bit)).is_err());
            }

            // Another position of the same tree: the path has the wrong shape or the wrong leaf.
            let other_index = other % size;
            if other_index != index {
                prop_assert!(verify_inclusion(leaf, other_index, size, &path, root).is_err());
                let their_leaf = leaf_at(other_index);
                prop_assert!(verify_inclusion(their_leaf, other_index, size, &path, root).is_err());
            }
            // Another size, with its own root: never accepted.
            if other != size && index < other {
                let other_root = super::root(tree, other).unwrap();
                prop_assert!(verify_inclusion(leaf, index, other, &path, other_root).is_err());
                // With this root, a different size passes exactly when it implies the same
                // shape (see `sizes_are_bound_only_by_the_roots`).
                let same_shape = path_shape(index, other).eq(path_shape(index, size));
                prop_assert_eq!(verify_inclusion(leaf, index, other, &path, root).is_ok(), same_shape);
            }
        }

        #[test]
        fn consistency_proofs_verify_and_resist_tampering(
            (old, new) in old_and_new(),
            (other_old, other_new) in old_and_new(),
        ) {
            let tree = big();
            let (old_root, new_root) = (root(tree, old).unwrap(), root(tree, new).unwrap());
            let proof = consistency_proof(tree, old, new).unwrap();
            prop_assert_eq!(verify_consistency(old, new, old_root, new_root, &proof), Ok(()));

            for i in 0..proof.len() {
                for bit in 0..256 {
                    let mut bad = proof.clone();
                    bad[i] = flip(bad[i], bit);
                    prop_assert!(verify_consistency(old, new, old_root, new_root, &bad).is_err());
                }
                let mut dropped = proof.clone();
                dropped.remove(i);
                prop_assert!(verify_consistency(old, new, old_root, new_root, &dropped).is_err());
            }
            for extra in [old_root, new_root, leaf_at(old)] {
                let mut longer = proof.clone();
                longer.push(extra);
                prop_assert!(verify_consistency(old, new, old_root, new_root, &longer).is_err());
                longer.rotate_right(1);
                prop_assert!(verify_consistency(old, new, old_root, new_root, &longer).is_err());
            }
            if old != new {
                // RFC 9162 verification starts from the claimed old root when the old size is a
                // power of two (the proof then omits it), so a wrong old root shows up as a
                // wrong new root there.
                let wrong_old = if old.is_power_of_two() {
                    VerifyError::NewRootMismatch
                } else {
                    VerifyError::OldRootMismatch
                };
                for bit in [0, 255] {
                    prop_assert_eq!(
                        verify_consistency(old, new, flip(old_root, bit), new_root, &proof),
                        Err(wrong_old.clone())
                    );
                    prop_assert_eq!(
                        verify_consistency(old, new, old_root, flip(new_root, bit), &proof),
                        Err(VerifyError::NewRootMismatch)
                    );
                }
                prop_assert!(verify_consistency(old, new, new_root, old_root, &proof).is_err());
            }
            // Other sizes, with their own roots: never accepted.
            if (other_old, other_new) != (old, new) && other_old != other_new {
                let (r1, r2) = (root(tree, other_old).unwrap(), root(tree, other_new).unwrap());
                prop_assert!(verify_consistency(other_old, other_new, r1, r2, &proof).is_err());
                prop_assert!(verify_consistency(other_old, new, r1, new_root, &proof).is_err());
                prop_assert!(verify_consistency(old, other_new, old_root, r2, &proof).is_err());
            }
        }
    }

    // ---- RFC 6962 hashing ----------------------------------------------------------------

    fn hex32(text: &str) -> Hash32 {
        Hash32::from_hex(text).unwrap()
    }

    /// Leaf inputs, node hashes and roots of transparency-dev/merkle's `testonly/constants.go`
    /// (`LeafInputs`, `NodeHashes`, `RootHashes`), the reference vectors of Go's RFC 6962 tree.
    const GO_LEAF_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const GO_NODE_HASHES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];
    const GO_ROOT_HASHES: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn go_tree() -> rfc6962::MemoryTree {
        let mut tree = rfc6962::MemoryTree::default();
        for input in GO_LEAF_INPUTS {
            tree.push(rfc6962::leaf_hash(&hex::decode(input).unwrap()));
        }
        tree
    }

    #[test]
    fn rfc6962_known_answers_of_go_merkle() {
        let tree = go_tree();
        assert_eq!(rfc6962::EMPTY_ROOT, sha256(b""));
        assert_eq!(rfc6962::EMPTY_ROOT, hex32(GO_ROOT_HASHES[0]));
        let mut frontier = rfc6962::Frontier::default();
        for size in 1..=8u64 {
            let expected = hex32(GO_ROOT_HASHES[size as usize]);
            assert_eq!(rfc6962::root(&tree, size).unwrap(), expected, "size {size}");
            let leaf = tree.subtree_hash(0, size - 1).unwrap();
            frontier.push(leaf, &mut Vec::new());
            assert_eq!(frontier.root(), Some(expected), "frontier at {size}");
        }
        for (level, row) in GO_NODE_HASHES.iter().enumerate() {
            for (index, hash) in row.iter().enumerate() {
                assert_eq!(
                    tree.subtree_hash(level as u32, index as u64).unwrap(),
                    hex32(hash),
                    "node ({level}, {index})"
                );
            }
        }
        // Consistency proofs written out in Go's node hashes by hand, following RFC 6962
        // §2.1.2's recursion: 1→8, 6→8, 2→5, 3→7; 4→8 omits the old root, a power of two.
        let node = |level: usize, index: usize| hex32(GO_NODE_HASHES[level][index]);
        let cases: [(u64, u64, Vec<Hash32>); 5] = [
            (1, 8, vec![node(0, 1), node(1, 1), node(2, 1)]),
            (6, 8, vec![node(1, 2), node(1, 3), node(2, 0)]),
            (2, 5, vec![node(1, 1), node(0, 4)]),
            (
                3,
                7,
                vec![
                    node(0, 2),
                    node(0, 3),
                    node(1, 0),
                    // MTH(D[4:7]) is no full subtree: the ragged edge, folded.
                    Rfc6962::children(&node(1, 2), &node(0, 6)),
                ],
            ),
            (4, 8, vec![node(2, 1)]),
        ];
        for (old, new, expected) in cases {
            let proof = rfc6962::consistency_proof(&tree, old, new).unwrap();
            assert_eq!(proof, expected, "{old} -> {new}");
            let (r_old, r_new) = (
                hex32(GO_ROOT_HASHES[old as usize]),
                hex32(GO_ROOT_HASHES[new as usize]),
            );
            assert_eq!(
                rfc6962::verify_consistency(old, new, r_old, r_new, &proof),
                Ok(())
            );
            // The same proof under CCF's hashing proves nothing.
            assert!(verify_consistency(old, new, r_old, r_new, &proof).is_err());
        }
        // Leaf 0 of 8: its three right siblings.
        let path = rfc6962::inclusion_path(&tree, 0, 8).unwrap();
        assert_eq!(
            path,
            [
                ProofStep::Right(node(0, 1)),
                ProofStep::Right(node(1, 1)),
                ProofStep::Right(node(2, 1))
            ]
        );
        let leaf0 = rfc6962::leaf_hash(b"");
        assert_eq!(
            rfc6962::verify_inclusion(leaf0, 0, 8, &path, hex32(GO_ROOT_HASHES[8])),
            Ok(())
        );
        assert_eq!(rfc6962::fold_path(leaf0, &path), hex32(GO_ROOT_HASHES[8]));
    }

    #[test]
    fn rfc6962_hashing_is_domain_separated() {
        let (l, r) = (sha256(b"l"), sha256(b"r"));
        let mut joined = vec![0x01];
        joined.extend_from_slice(&l.0);
        joined.extend_from_slice(&r.0);
        assert_eq!(Rfc6962::children(&l, &r), sha256(&joined));
        let mut leaf = vec![0x00];
        leaf.extend_from_slice(&l.0);
        assert_eq!(Rfc6962::leaf(&l), sha256(&leaf));
        assert_eq!(Ccf::leaf(&l), l);
        assert_eq!(Ccf::children(&l, &r), hash_children(&l, &r));
    }

    /// The ledger's leaves hashed the RFC 6962 way: data of leaf i is the CCF leaf of i.
    fn rfc_tree_of(n: u64) -> (Vec<Hash32>, rfc6962::MemoryTree) {
        let leaves: Vec<Hash32> = (0..n).map(|i| Rfc6962::leaf(&leaf_at(i))).collect();
        let mut tree = rfc6962::MemoryTree::default();
        leaves.iter().for_each(|l| tree.push(*l));
        (leaves, tree)
    }

    const RFC_BIG: u64 = 20_000;

    fn rfc_big() -> &'static (Vec<Hash32>, rfc6962::MemoryTree) {
        static TREE: OnceLock<(Vec<Hash32>, rfc6962::MemoryTree)> = OnceLock::new();
        TREE.get_or_init(|| rfc_tree_of(RFC_BIG))
    }

    #[test]
    fn rfc6962_proofs_match_the_rfc_recursion() {
        let (leaves, tree) = rfc_big();
        for new in 1..=70u64 {
            let d = &leaves[..new as usize];
            assert_eq!(rfc6962::root(tree, new).unwrap(), rfc_mth_in::<Rfc6962>(d));
            for old in 1..=new {
                assert_eq!(
                    rfc6962::consistency_proof(tree, old, new).unwrap(),
                    rfc_subproof_in::<Rfc6962>(old as usize, d, true),
                    "{old} -> {new}"
                );
                let index = old - 1;
                assert_eq!(
                    rfc6962::inclusion_path(tree, index, new).unwrap(),
                    rfc_path_in::<Rfc6962>(index as usize, d),
                    "{index} in {new}"
                );
            }
        }
        // Different hashing, different trees over the same leaves.
        let ccf = &small().1;
        assert_ne!(root(ccf, 5).unwrap(), rfc6962::root(tree, 5).unwrap());
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn rfc6962_proofs_verify_and_every_bit_matters(
            (old, new) in (1..=RFC_BIG).prop_flat_map(|new| (1..=new, Just(new))),
            index_seed in any::<u64>(),
        ) {
            let (leaves, tree) = rfc_big();
            let (old_root, new_root) =
                (rfc6962::root(tree, old).unwrap(), rfc6962::root(tree, new).unwrap());
            let proof = rfc6962::consistency_proof(tree, old, new).unwrap();
            prop_assert_eq!(
                rfc6962::verify_consistency(old, new, old_root, new_root, &proof),
                Ok(())
            );
            for i in 0..proof.len() {
                for bit in 0..256 {
                    let mut bad = proof.clone();
                    bad[i] = flip(bad[i], bit);
                    prop_assert!(
                        rfc6962::verify_consistency(old, new, old_root, new_root, &bad).is_err()
                    );
                }
            }
            if old != new {
                for bit in 0..256 {
                    prop_assert!(rfc6962::verify_consistency(
                        old, new, flip(old_root, bit), new_root, &proof).is_err());
                    prop_assert!(rfc6962::verify_consistency(
                        old, new, old_root, flip(new_root, bit), &proof).is_err());
                }
            }

            let index = index_seed % new;
            let leaf = leaves[index as usize];
            let path = rfc6962::inclusion_path(tree, index, new).unwrap();
            prop_assert_eq!(rfc6962::verify_inclusion(leaf, index, new, &path, new_root), Ok(()));
            for i in 0..path.len() {
                for bit in 0..256 {
                    let mut bad = path.clone();
                    bad[i] = match bad[i] {
                        ProofStep::Left(h) => ProofStep::Left(flip(h, bit)),
                        ProofStep::Right(h) => ProofStep::Right(flip(h, bit)),
                    };
                    prop_assert_eq!(
                        rfc6962::verify_inclusion(leaf, index, new, &bad, new_root),
                        Err(VerifyError::RootMismatch)
                    );
                }
            }
            for bit in 0..256 {
                prop_assert!(
                    rfc6962::verify_inclusion(flip(leaf, bit), index, new, &path, new_root).is_err()
                );
            }
        }
    }
}
