//! One index over the log: fixed-width keys and values, the newest changes
//! in memory (the active table, then tables frozen for a checkpoint), the
//! rest in runs on disk. A lookup asks them newest first; a scan merges
//! them, newest first for each key, and never shows a removed key.

use crate::run::{Run, RunError, RunWriter};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

/// An in-memory table: each key set to a value, or removed (a removal must
/// hide what older runs hold).
pub type MemTable<const K: usize, const V: usize> = BTreeMap<[u8; K], Option<[u8; V]>>;

/// What an index is, as the ledger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Its id in records and run files (never reused for another index).
    pub id: u8,
    /// Its name, for messages.
    pub name: &'static str,
    /// Key length.
    pub key_len: usize,
    /// Value length.
    pub val_len: usize,
    /// Whether a record's payload is a body whose place is the value (12
    /// bytes), rather than the value itself.
    pub bodies: bool,
    /// Whether its bodies are compressed (with a dictionary trained on its
    /// own first bodies).
    pub compress: bool,
}

/// A frozen table waiting to become a run, whatever its widths.
pub trait Frozen: Send + Sync {
    /// Entries held.
    fn len(&self) -> usize;
    /// Whether it holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes it as a run at `path`.
    fn write(&self, path: &Path, spec: &Spec) -> Result<(), RunError>;
    /// For matching it when it is replaced by its run.
    fn id(&self) -> usize;
}

struct FrozenTable<const K: usize, const V: usize>(Arc<MemTable<K, V>>);

impl<const K: usize, const V: usize> Frozen for FrozenTable<K, V> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn write(&self, path: &Path, spec: &Spec) -> Result<(), RunError> {
        let mut w = RunWriter::create(path, spec.id, K, V, self.0.len() as u64)?;
        let zero = [0u8; V];
        for (k, v) in self.0.iter() {
            w.push(k, v.is_none(), v.as_ref().unwrap_or(&zero))?;
        }
        w.finish()?;
        Ok(())
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// What the ledger asks of an index, whatever its widths. Keys and values
/// cross as byte slices; a slice of the wrong length is never stored.
pub trait Table: Send + Sync {
    /// What it is.
    fn spec(&self) -> Spec;
    /// The value of `key`, if set.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Says each set key from `from` (inclusive) to `to` (exclusive; none:
    /// to the end) with its value to `f`, in key order, until `f` answers
    /// false.
    fn scan(&self, from: &[u8], to: Option<&[u8]>, f: &mut dyn FnMut(&[u8], &[u8]) -> bool);
    /// Applies changes to the active table (the writer, after the log holds
    /// them): a value, or `None` for a removal.
    fn apply(&self, key: &[u8], value: Option<&[u8]>);
    /// Applies many changes under one hold of the lock (a batch's changes
    /// to this index).
    fn apply_all(&self, changes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>);
    /// Entries in the active table.
    fn active_len(&self) -> usize;
    /// Freezes the active table for a checkpoint (a new, empty one takes its
    /// place); none when it is empty.
    fn freeze(&self) -> Option<Arc<dyn Frozen>>;
    /// Replaces a frozen table by the run written from it (none: it was empty).
    fn install(&self, frozen: usize, run: Option<Arc<Run>>);
    /// The runs, oldest first.
    fn runs(&self) -> Vec<Arc<Run>>;
    /// Replaces `old` runs (adjacent, oldest first) by `merged`.
    fn replace_runs(&self, old: &[Arc<Run>], merged: Arc<Run>);
    /// Sets the runs (at open).
    fn set_runs(&self, runs: Vec<Arc<Run>>);
}

struct State<const K: usize, const V: usize> {
    active: MemTable<K, V>,
    /// Moves at every freeze: a scan that reads the active table a chunk
    /// at a time starts again from where it stood when the table it was
    /// reading became a frozen one it does not hold.
    epoch: u64,
    /// Oldest first.
    frozen: Vec<Arc<MemTable<K, V>>>,
    /// Oldest first.
    runs: Vec<Arc<Run>>,
}

/// An index of `K`-byte keys and `V`-byte values.
pub struct Index<const K: usize, const V: usize> {
    spec: Spec,
    state: RwLock<State<K, V>>,
}

impl<const K: usize, const V: usize> Index<K, V> {
    /// A new, empty index.
    pub fn new(id: u8, name: &'static str, bodies: bool) -> Self {
        Index {
            spec: Spec {
                id,
                name,
                key_len: K,
                val_len: V,
                bodies,
                compress: false,
            },
            state: RwLock::new(State {
                active: BTreeMap::new(),
                epoch: 0,
                frozen: Vec::new(),
                runs: Vec::new(),
            }),
        }
    }

    /// The same index, its bodies compressed (each alone, with a
    /// dictionary trained on its own first bodies).
    pub fn compressed(mut self) -> Self {
        self.spec.compress = self.spec.bodies;
        self
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State<K, V>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State<K, V>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A scan met the active table frozen since it began.
struct Refrozen;

/// A key and its value, or its removal.
type Entry<const K: usize, const V: usize> = ([u8; K], Option<[u8; V]>);

/// Entries taken from the active table at a time during a scan (the lock
/// is held only while they are copied).
const CHUNK: usize = 256;

/// One source of a merged scan, newest sources first.
enum Cursor<const K: usize, const V: usize> {
    /// A table in memory, copied a chunk at a time (the active one under
    /// the index's lock).
    Mem {
        table: Option<Arc<MemTable<K, V>>>,
        buf: std::collections::VecDeque<([u8; K], Option<[u8; V]>)>,
        next_from: Option<Bound<[u8; K]>>,
    },
    /// A run on disk.
    Run { run: Arc<Run>, at: u64 },
}

impl<const K: usize, const V: usize> Index<K, V> {
    /// Copies the next chunk from `from` into `buf`; where the next one
    /// starts (none: the table's end). `Err`: the active table was frozen
    /// since the scan began (`epoch`), so the scan must start again.
    fn refill(
        &self,
        table: Option<&MemTable<K, V>>,
        epoch: u64,
        from: Bound<[u8; K]>,
        buf: &mut std::collections::VecDeque<([u8; K], Option<[u8; V]>)>,
    ) -> Result<Option<Bound<[u8; K]>>, Refrozen> {
        let mut last = None;
        let mut fill = |t: &MemTable<K, V>| {
            for (k, v) in t.range((from, Bound::Unbounded)).take(CHUNK) {
                buf.push_back((*k, *v));
                last = Some(*k);
            }
        };
        match table {
            Some(t) => fill(t),
            None => {
                let s = self.read();
                if s.epoch != epoch {
                    return Err(Refrozen);
                }
                fill(&s.active)
            }
        }
        Ok(if buf.len() < CHUNK {
            None
        } else {
            last.map(Bound::Excluded)
        })
    }

    fn peek(&self, c: &mut Cursor<K, V>, epoch: u64) -> Result<Option<Entry<K, V>>, Refrozen> {
        match c {
            Cursor::Mem {
                table,
                buf,
                next_from,
            } => {
                if buf.is_empty() {
                    let Some(from) = next_from.take() else {
                        return Ok(None);
                    };
                    *next_from = self.refill(table.as_deref(), epoch, from, buf)?;
                }
                Ok(buf.front().copied())
            }
            Cursor::Run { run, at } => {
                if *at >= run.len() {
                    return Ok(None);
                }
                let (k, removed, v) = run.entry(*at);
                let Ok(key) = <[u8; K]>::try_from(k) else {
                    return Ok(None);
                };
                let value = if removed {
                    None
                } else {
                    match <[u8; V]>::try_from(v) {
                        Ok(v) => Some(v),
                        Err(_) => return Ok(None),
                    }
                };
                Ok(Some((key, value)))
            }
        }
    }

    /// The sources of a scan from `from`, newest first, as the index
    /// stands now, and the epoch they belong to.
    fn cursors(&self, from: Bound<[u8; K]>) -> (Vec<Cursor<K, V>>, u64) {
        let (frozen, runs, epoch) = {
            let s = self.read();
            (s.frozen.clone(), s.runs.clone(), s.epoch)
        };
        let mut cursors: Vec<Cursor<K, V>> = Vec::with_capacity(1 + frozen.len() + runs.len());
        cursors.push(Cursor::Mem {
            table: None,
            buf: Default::default(),
            next_from: Some(from),
        });
        for t in frozen.into_iter().rev() {
            cursors.push(Cursor::Mem {
                table: Some(t),
                buf: Default::default(),
                next_from: Some(from),
            });
        }
        for r in runs.into_iter().rev() {
            let at = match from {
                Bound::Included(k) => r.lower_bound(&k),
                Bound::Excluded(k) => {
                    let at = r.lower_bound(&k);
                    if at < r.len() && r.entry(at).0 == k.as_slice() {
                        at + 1
                    } else {
                        at
                    }
                }
                Bound::Unbounded => 0,
            };
            cursors.push(Cursor::Run { run: r, at });
        }
        (cursors, epoch)
    }

    fn advance(c: &mut Cursor<K, V>) {
        match c {
            Cursor::Mem { buf, .. } => {
                buf.pop_front();
            }
            Cursor::Run { at, .. } => *at += 1,
        }
    }
}

impl<const K: usize, const V: usize> Table for Index<K, V> {
    fn spec(&self) -> Spec {
        self.spec
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let key: &[u8; K] = key.try_into().ok()?;
        // Under the read lock throughout: runs are read through their maps
        // (no copy of the list of runs for every lookup).
        let s = self.read();
        if let Some(v) = s.active.get(key) {
            return v.map(|v| v.to_vec());
        }
        for t in s.frozen.iter().rev() {
            if let Some(v) = t.get(key) {
                return v.map(|v| v.to_vec());
            }
        }
        for r in s.runs.iter().rev() {
            if let Some((removed, v)) = r.get(key) {
                return (!removed).then_some(v);
            }
        }
        None
    }

    fn scan(&self, from: &[u8], to: Option<&[u8]>, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
        let Ok(from) = <[u8; K]>::try_from(from) else {
            return;
        };
        let mut resume = Bound::Included(from);
        'sources: loop {
            let (mut cursors, epoch) = self.cursors(resume);
            loop {
                // The smallest key among the sources; the newest source's
                // entry for it wins, the others' are passed over.
                let mut best: Option<Entry<K, V>> = None;
                for c in cursors.iter_mut() {
                    match self.peek(c, epoch) {
                        Ok(Some((k, v))) => {
                            if best.as_ref().is_none_or(|(bk, _)| k < *bk) {
                                best = Some((k, v));
                            }
                        }
                        Ok(None) => {}
                        // The active table was frozen meanwhile: the
                        // sources again, from the last key said.
                        Err(Refrozen) => continue 'sources,
                    }
                }
                let Some((key, value)) = best else {
                    return;
                };
                if to.is_some_and(|to| key.as_slice() >= to) {
                    return;
                }
                for c in cursors.iter_mut() {
                    if matches!(self.peek(c, epoch), Ok(Some((k, _))) if k == key) {
                        Self::advance(c);
                    }
                }
                resume = Bound::Excluded(key);
                if let Some(v) = value {
                    if !f(&key, &v) {
                        return;
                    }
                }
            }
        }
    }

    fn apply(&self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = <[u8; K]>::try_from(key) else {
            return;
        };
        let value = match value {
            Some(v) => match <[u8; V]>::try_from(v) {
                Ok(v) => Some(v),
                Err(_) => return,
            },
            None => None,
        };
        self.write().active.insert(key, value);
    }

    fn apply_all(&self, changes: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>) {
        let mut s = self.write();
        for (key, value) in changes {
            let Ok(key) = <[u8; K]>::try_from(key) else {
                continue;
            };
            let value = match value {
                Some(v) => match <[u8; V]>::try_from(v) {
                    Ok(v) => Some(v),
                    Err(_) => continue,
                },
                None => None,
            };
            s.active.insert(key, value);
        }
    }

    fn active_len(&self) -> usize {
        self.read().active.len()
    }

    fn freeze(&self) -> Option<Arc<dyn Frozen>> {
        let mut s = self.write();
        if s.active.is_empty() {
            return None;
        }
        let t = Arc::new(std::mem::take(&mut s.active));
        s.frozen.push(t.clone());
        s.epoch += 1;
        Some(Arc::new(FrozenTable(t)))
    }

    fn install(&self, frozen: usize, run: Option<Arc<Run>>) {
        let mut s = self.write();
        s.frozen.retain(|t| Arc::as_ptr(t) as usize != frozen);
        if let Some(r) = run {
            s.runs.push(r);
        }
    }

    fn runs(&self) -> Vec<Arc<Run>> {
        self.read().runs.clone()
    }

    fn replace_runs(&self, old: &[Arc<Run>], merged: Arc<Run>) {
        let mut s = self.write();
        let Some(first) = old.first() else {
            return;
        };
        let Some(at) = s.runs.iter().position(|r| Arc::ptr_eq(r, first)) else {
            return;
        };
        let n = old.len();
        let same = s
            .runs
            .get(at..at + n)
            .is_some_and(|held| held.iter().zip(old).all(|(a, b)| Arc::ptr_eq(a, b)));
        if same {
            s.runs.splice(at..at + n, [merged]);
        }
    }

    fn set_runs(&self, runs: Vec<Arc<Run>>) {
        self.write().runs = runs;
    }
}

/// Writes the merge of `runs` (oldest first) as one run at `path`: for each
/// key the newest entry; removals dropped when `bottom` (nothing older
/// remains for them to hide).
pub fn merge_runs(
    runs: &[Arc<Run>],
    path: &Path,
    spec: &Spec,
    bottom: bool,
) -> Result<(), RunError> {
    let total: u64 = runs.iter().map(|r| r.len()).sum();
    let mut w = RunWriter::create(path, spec.id, spec.key_len, spec.val_len, total)?;
    let mut at: Vec<u64> = vec![0; runs.len()];
    let mut key: Vec<u8> = Vec::with_capacity(spec.key_len);
    loop {
        // The smallest key among the runs' next entries; newest first, so
        // that on equal keys the newest wins.
        let mut best: Option<(usize, bool, &[u8])> = None;
        for (i, r) in runs.iter().enumerate().rev() {
            let Some(&pos) = at.get(i) else { continue };
            if pos >= r.len() {
                continue;
            }
            let (k, removed, v) = r.entry(pos);
            let better = match best {
                None => true,
                Some((b, _, _)) => runs
                    .get(b)
                    .zip(at.get(b))
                    .is_some_and(|(br, bp)| k < br.entry(*bp).0),
            };
            if better {
                best = Some((i, removed, v));
            }
        }
        let Some((from, removed, value)) = best else {
            break;
        };
        key.clear();
        if let (Some(r), Some(p)) = (runs.get(from), at.get(from)) {
            key.extend_from_slice(r.entry(*p).0);
        }
        if !(removed && bottom) {
            w.push(&key, removed, value)?;
        }
        for (i, r) in runs.iter().enumerate() {
            if let Some(pos) = at.get_mut(i) {
                if *pos < r.len() && r.entry(*pos).0 == key.as_slice() {
                    *pos += 1;
                }
            }
        }
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u32) -> [u8; 4] {
        i.to_be_bytes()
    }

    fn live(ix: &dyn Table) -> Vec<(u32, u16)> {
        let mut out = Vec::new();
        ix.scan(&k(0), None, &mut |key, v| {
            out.push((
                u32::from_be_bytes(key.try_into().unwrap()),
                u16::from_be_bytes(v.try_into().unwrap()),
            ));
            true
        });
        out
    }

    /// A scan reads the active table a chunk at a time; a checkpoint that
    /// freezes it (and then installs its run) in the middle of a scan must
    /// not hide a key from that scan, nor say one twice.
    #[test]
    fn a_scan_misses_nothing_when_the_active_table_is_frozen_under_it() {
        let dir = tempfile::tempdir().unwrap();
        for (stop_at, install) in [(300u32, false), (300, true), (255, false), (700, true)] {
            let ix = Index::<4, 2>::new(1, "test", false);
            for key in 0..1000u32 {
                ix.apply(&k(key), Some(&(key as u16).to_be_bytes()));
            }
            let mut seen = Vec::new();
            ix.scan(&k(0), None, &mut |key, _| {
                let key = u32::from_be_bytes(key.try_into().unwrap());
                seen.push(key);
                if key == stop_at {
                    let f = ix.freeze().unwrap();
                    if install {
                        let path = dir.path().join(format!("{stop_at}.run"));
                        f.write(&path, &ix.spec()).unwrap();
                        ix.install(f.id(), Some(Arc::new(Run::open(&path).unwrap())));
                    }
                    // A change after the freeze, ahead of the scan: seen.
                    ix.apply(&k(5000), Some(&[0, 1]));
                    // And one behind it: not said again.
                    ix.apply(&k(1), Some(&[0, 2]));
                }
                true
            });
            let mut want: Vec<u32> = (0..1000).collect();
            want.push(5000);
            assert_eq!(seen, want, "frozen at {stop_at}, installed {install}");
        }
    }

    #[test]
    fn lookups_and_scans_see_the_newest_change_across_tables_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ix = Index::<4, 2>::new(1, "test", false);
        let mut model = std::collections::BTreeMap::new();
        let mut run_no = 0;
        let mut rng = 12345u64;
        for round in 0u32..6 {
            for _ in 0..500 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = (rng % 800) as u32;
                if rng.is_multiple_of(5) {
                    ix.apply(&k(key), None);
                    model.remove(&key);
                } else {
                    let v = (rng >> 20) as u16;
                    ix.apply(&k(key), Some(&v.to_be_bytes()));
                    model.insert(key, v);
                }
            }
            // Every other round becomes a run; the last stays in memory.
            if round.is_multiple_of(2) {
                let f = ix.freeze().unwrap();
                run_no += 1;
                let path = dir.path().join(format!("{run_no}.run"));
                f.write(&path, &ix.spec()).unwrap();
                ix.install(f.id(), Some(Arc::new(Run::open(&path).unwrap())));
            }
        }
        let want: Vec<(u32, u16)> = model.iter().map(|(a, b)| (*a, *b)).collect();
        assert_eq!(live(&ix), want);
        for key in 0..800 {
            assert_eq!(
                ix.get(&k(key)),
                model.get(&key).map(|v| v.to_be_bytes().to_vec()),
                "key {key}"
            );
        }
        // Merged into one bottom run, the same view, removals gone.
        let runs = ix.runs();
        assert_eq!(runs.len(), 3);
        let path = dir.path().join("merged.run");
        merge_runs(&runs, &path, &ix.spec(), true).unwrap();
        let merged = Arc::new(Run::open(&path).unwrap());
        ix.replace_runs(&runs, merged.clone());
        assert_eq!(ix.runs().len(), 1);
        assert_eq!(live(&ix), want);
        // A scan from a key to another stops there, and at f's word.
        let mut n = 0;
        ix.scan(&k(100), Some(&k(200)), &mut |key, _| {
            let key = u32::from_be_bytes(key.try_into().unwrap());
            assert!((100..200).contains(&key));
            n += 1;
            n < 5
        });
        assert!(n <= 5);
    }
}
