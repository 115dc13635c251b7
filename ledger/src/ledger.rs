//! The ledger: the log, the indexes over it, and the checkpoints that turn
//! the indexes' newest changes into runs.
//!
//! Durability: a batch's records are written to the log and synced before
//! its changes reach the indexes, and the owner records the log's new end
//! in its own atomic commit; opening cuts the log back to the end the owner
//! recorded. The indexes are derived from the log: runs hold every change
//! before the manifest's checkpoint, and opening replays the records after
//! it, so a crash anywhere loses nothing the owner committed. A checkpoint
//! is written only for a place the owner has said is durable
//! ([`Ledger::made_durable`]). A damaged or missing manifest or run is
//! rebuilt from the whole log (the damaged file kept aside), never the
//! other way round: the log is what was acknowledged.

use crate::dict::{Dicts, DICTS};
use crate::index::{merge_runs, Frozen, Index, Spec, Table};
use crate::log::{Log, LogError, Ptr, Walked};
use crate::manifest::{Manifest, ManifestError, RunName};
use crate::record::{encode, encode_with, Op, FIXED, MAX_KEY};
use crate::run::{Run, RunError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Runs of one size merged at once.
const TIER: usize = 4;

/// How the ledger runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Changes held in memory before a checkpoint writes them as runs
    /// (bounds both the memory they take and what opening replays).
    pub checkpoint_entries: usize,
    /// Most runs an index keeps before its newest are merged regardless of
    /// their sizes.
    pub max_runs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            checkpoint_entries: 1 << 20,
            max_runs: 12,
        }
    }
}

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The ledger was used against its rules (an unknown index, a key of
    /// the wrong length, a batch started before another committed).
    #[error("ledger: {0}")]
    Misuse(String),
}

/// Damage met while opening (replaying the log): what is there, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset in the log.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// What is wrong.
    pub reason: String,
}

/// Work for the checkpoint thread, done in the order given: a checkpoint
/// (each index's runs stay oldest first, and the manifest's checkpoint
/// never covers a change not yet in a run), or a dictionary to train.
enum Job {
    Checkpoint {
        at: u64,
        frozen: Vec<(usize, Arc<dyn Frozen>)>,
        /// Told when the job is done (a checkpoint asked for now).
        done: Option<mpsc::Sender<Result<(), String>>>,
    },
    Train(u8, Vec<Vec<u8>>),
}

struct Inner {
    dir: PathBuf,
    log: Log,
    tables: Vec<Arc<dyn Table>>,
    /// Table position of each index id.
    by_id: Vec<Option<usize>>,
    options: Options,
    /// The end of the log the owner has made durable.
    durable: Mutex<u64>,
    durable_changed: Condvar,
    manifest: Mutex<Manifest>,
    /// Changes applied since the last freeze.
    unfrozen: AtomicUsize,
    stopping: AtomicBool,
    /// Held while runs are written and the manifest replaced (the
    /// checkpoint thread, and a checkpoint asked for now).
    runs_lock: Mutex<()>,
    /// The dictionaries of the indexes that compress their bodies.
    dicts: Arc<Dicts>,
}

/// The open ledger.
pub struct Ledger {
    inner: Arc<Inner>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One batch of changes, staged by the one writer and committed at once.
/// Reads through it see its own changes over what is committed.
pub struct Batch {
    start: u64,
    buf: Vec<u8>,
    staged: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>,
    key_lens: Vec<Option<usize>>,
    /// Which indexes compress their bodies.
    compress: Vec<bool>,
    dicts: Arc<Dicts>,
    /// A body's bytes before compression, reused.
    raw: Vec<u8>,
    /// Dictionaries this batch writes, put in place once it commits.
    activate: Vec<(u8, u8, Vec<u8>)>,
    /// Samples gathered for a dictionary, to train once it commits.
    train: Vec<(u8, Vec<Vec<u8>>)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batch {
    fn key_len(&self, index: u8) -> Option<usize> {
        self.key_lens.get(index as usize).copied().flatten()
    }

    /// Stores a body under `key` in an index of bodies (`write` appends its
    /// bytes); the index's value is the body's place, returned.
    pub fn put_body(&mut self, index: u8, key: &[u8], write: impl FnOnce(&mut Vec<u8>)) -> Ptr {
        let at = self.buf.len() as u64;
        let compress = self.compress.get(index as usize).copied().unwrap_or(false);
        let (_, len) = if compress {
            let mut raw = std::mem::take(&mut self.raw);
            raw.clear();
            write(&mut raw);
            let packed = match self.dicts.current(index) {
                Some((id, d)) => self
                    .dicts
                    .compress(&d, &raw)
                    .ok()
                    .filter(|p| p.len() < raw.len())
                    .map(|p| (id, p)),
                None => {
                    if let Some(samples) = self.dicts.sample(index, &raw) {
                        self.train.push((index, samples));
                    }
                    None
                }
            };
            let written = match packed {
                Some((id, p)) => encode_with(&mut self.buf, index, Op::Put, key, id, |b| {
                    b.extend_from_slice(&p)
                }),
                None => encode(&mut self.buf, index, Op::Put, key, |b| {
                    b.extend_from_slice(&raw)
                }),
            };
            self.raw = raw;
            written
        } else {
            encode(&mut self.buf, index, Op::Put, key, write)
        };
        let ptr = Ptr {
            offset: self.start + at,
            len,
        };
        self.staged
            .insert((index, key.to_vec()), Some(ptr.to_bytes().to_vec()));
        ptr
    }

    /// Sets `key` to `value` in an index of values.
    pub fn put(&mut self, index: u8, key: &[u8], value: &[u8]) {
        encode(&mut self.buf, index, Op::Put, key, |b| {
            b.extend_from_slice(value)
        });
        self.staged
            .insert((index, key.to_vec()), Some(value.to_vec()));
    }

    /// Removes `key` from an index.
    pub fn delete(&mut self, index: u8, key: &[u8]) {
        encode(&mut self.buf, index, Op::Delete, key, |_| {});
        self.staged.insert((index, key.to_vec()), None);
    }

    /// The batch's own change to `key`: `Some(None)` when it removed it.
    pub fn staged(&self, index: u8, key: &[u8]) -> Option<Option<&[u8]>> {
        self.staged
            .get(&(index, key.to_vec()))
            .map(|v| v.as_deref())
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes staged for the log.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The payload of a body this batch staged, as stored, with its codec.
    fn staged_body(&self, index: u8, p: Ptr) -> Option<(u8, &[u8])> {
        let at = p.offset.checked_sub(self.start)? as usize;
        let key_len = self.key_len(index)?;
        let codec = *self.buf.get(at.checked_add(14)?)?;
        let from = at.checked_add(FIXED + key_len)?;
        Some((
            codec,
            self.buf.get(from..from.checked_add(p.len as usize)?)?,
        ))
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` with these indexes, its log
    /// cut back to `durable_end` (what the owner last committed). Returns
    /// the damage met while replaying the log (the ledger still opens: a
    /// damaged body is reported when read).
    pub fn open(
        dir: &Path,
        tables: Vec<Arc<dyn Table>>,
        durable_end: u64,
        options: Options,
    ) -> Result<(Ledger, Vec<Damage>), LedgerError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        if tables.iter().any(|t| t.spec().id == DICTS) {
            return Err(LedgerError::Misuse(format!(
                "index id {DICTS} is the ledger's own (its dictionaries)"
            )));
        }
        let mut tables = tables;
        tables.push(Arc::new(Index::<2, 12>::new(DICTS, "dictionaries", true)));
        let mut by_id = vec![None; 256];
        for (i, t) in tables.iter().enumerate() {
            let s = t.spec();
            let slot = by_id
                .get_mut(s.id as usize)
                .ok_or_else(|| LedgerError::Misuse(format!("index id {}", s.id)))?;
            if slot.is_some()
                || s.key_len == 0
                || s.key_len > MAX_KEY
                || (s.bodies && s.val_len != 12)
            {
                return Err(LedgerError::Misuse(format!(
                    "index {} ({}): a duplicate id, or widths it cannot have",
                    s.id, s.name
                )));
            }
            *slot = Some(i);
        }
        let log = Log::open(dir, durable_end)?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            log,
            tables,
            by_id,
            options,
            durable: Mutex::new(durable_end),
            durable_changed: Condvar::new(),
            manifest: Mutex::new(Manifest::default()),
            unfrozen: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            runs_lock: Mutex::new(()),
            dicts: Arc::new(Dicts::default()),
        });
        let from = inner.load_runs(durable_end);
        let mut damage = inner.replay(from, durable_end)?;
        damage.extend(inner.load_dicts());
        let (tx, rx) = mpsc::channel();
        let worker_inner = inner.clone();
        let worker = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || worker_inner.work(rx))
            .map_err(|source| LogError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        Ok((
            Ledger {
                inner,
                jobs: Mutex::new(Some(tx)),
                worker: Mutex::new(Some(worker)),
            },
            damage,
        ))
    }

    /// A new batch, to be committed before any other is started.
    pub fn batch(&self) -> Batch {
        let mut key_lens = vec![None; 256];
        let mut compress = vec![false; 256];
        for t in &self.inner.tables {
            let s = t.spec();
            if let Some(k) = key_lens.get_mut(s.id as usize) {
                *k = Some(s.key_len);
            }
            if let Some(c) = compress.get_mut(s.id as usize) {
                *c = s.compress;
            }
        }
        let mut b = Batch {
            start: self.inner.log.end(),
            buf: Vec::new(),
            staged: BTreeMap::new(),
            key_lens,
            compress,
            dicts: self.inner.dicts.clone(),
            raw: Vec::new(),
            activate: Vec::new(),
            train: Vec::new(),
        };
        // A dictionary trained meanwhile is written first: before any body
        // compressed with it (it compresses only once this batch commits).
        for (index, id, bytes) in self.inner.dicts.take_ready() {
            b.put_body(DICTS, &[index, id], |o| o.extend_from_slice(&bytes));
            b.activate.push((index, id, bytes));
        }
        b
    }

    /// Where the log ends (what a new batch starts at).
    pub fn end(&self) -> u64 {
        self.inner.log.end()
    }

    /// Writes the batch's records to the log and syncs them, then applies
    /// its changes to the indexes. Returns the log's new end, which the
    /// owner records in its own commit. On failure nothing of the batch is
    /// applied and the log's end stays: the next batch is written there.
    pub fn commit(&self, batch: Batch) -> Result<u64, LedgerError> {
        if batch.buf.is_empty() {
            return Ok(self.end());
        }
        if batch.start != self.inner.log.end() {
            return Err(LedgerError::Misuse(
                "a batch started before another one committed".into(),
            ));
        }
        let end = self.inner.log.write_durable(batch.start, &batch.buf)?;
        let n = batch.staged.len();
        // The staged changes are in (index, key) order: each index's taken
        // under one hold of its lock.
        let mut changes = batch.staged.iter().peekable();
        while let Some(((index, _), _)) = changes.peek() {
            let index = *index;
            let mut of_index = std::iter::from_fn(|| {
                changes
                    .next_if(|((i, _), _)| *i == index)
                    .map(|((_, k), v)| (k.as_slice(), v.as_deref()))
            });
            match self.inner.table(index) {
                Some(t) => t.apply_all(&mut of_index),
                None => of_index.for_each(drop),
            }
        }
        for (index, id, bytes) in &batch.activate {
            self.inner.dicts.install(*index, *id, bytes);
        }
        for (index, samples) in batch.train {
            if let Some(tx) = lock(&self.jobs).as_ref() {
                let _ = tx.send(Job::Train(index, samples));
            }
        }
        let unfrozen = self.inner.unfrozen.fetch_add(n, Ordering::AcqRel) + n;
        if unfrozen >= self.inner.options.checkpoint_entries {
            self.checkpoint_at(end);
        }
        Ok(end)
    }

    /// Freezes every index's newest changes and hands them to the
    /// checkpoint thread, which writes them as runs once `end` is durable.
    fn checkpoint_at(&self, end: u64) {
        let frozen = self.inner.freeze_all();
        if frozen.is_empty() {
            return;
        }
        if let Some(tx) = lock(&self.jobs).as_ref() {
            let _ = tx.send(Job::Checkpoint {
                at: end,
                frozen,
                done: None,
            });
        }
    }

    /// The owner made everything up to `end` durable in its own commit: a
    /// checkpoint may now cover it.
    pub fn made_durable(&self, end: u64) {
        let mut d = lock(&self.inner.durable);
        if end > *d {
            *d = end;
            self.inner.durable_changed.notify_all();
        }
    }

    /// The value of `key` in `index`, if set.
    pub fn get(&self, index: u8, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.table(index)?.get(key)
    }

    /// The value of `key` as `batch` sees it.
    pub fn get_in(&self, batch: &Batch, index: u8, key: &[u8]) -> Option<Vec<u8>> {
        match batch.staged(index, key) {
            Some(v) => v.map(|v| v.to_vec()),
            None => self.get(index, key),
        }
    }

    /// Says each set key of `index` from `from` (inclusive) to `to`
    /// (exclusive) with its value to `f`, in order, until `f` answers false.
    pub fn scan(
        &self,
        index: u8,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        if let Some(t) = self.inner.table(index) {
            t.scan(from, to, f);
        }
    }

    /// Every set key of `index` in `[from, to)` as `batch` sees it (for
    /// small ranges: what is committed is gathered before the batch's own
    /// changes are laid over it).
    pub fn scan_in(
        &self,
        batch: &Batch,
        index: u8,
        from: &[u8],
        to: &[u8],
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.scan(index, from, Some(to), &mut |k, v| {
            merged.insert(k.to_vec(), v.to_vec());
            true
        });
        for ((_, k), v) in batch
            .staged
            .range((index, from.to_vec())..(index, to.to_vec()))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        merged.into_iter().collect()
    }

    /// The payload of the body at `p` in `index`, checked.
    pub fn body(&self, index: u8, p: Ptr) -> Result<Vec<u8>, LedgerError> {
        let key_len = self.key_len(index)?;
        let (codec, stored) = self.inner.log.read(p, key_len)?;
        self.inner.unpack(index, p, codec, stored)
    }

    /// The payload of a body as `batch` sees it (its own, or committed).
    pub fn body_in(&self, batch: &Batch, index: u8, p: Ptr) -> Result<Vec<u8>, LedgerError> {
        if p.offset >= batch.start {
            let (codec, stored) = batch
                .staged_body(index, p)
                .ok_or_else(|| LedgerError::Misuse("a staged body's place".into()))?;
            return self.inner.unpack(index, p, codec, stored.to_vec());
        }
        self.body(index, p)
    }

    /// The bytes of the record at `p`, header and payload, unchecked.
    pub fn body_raw(&self, index: u8, p: Ptr) -> Result<Vec<u8>, LedgerError> {
        let key_len = self.key_len(index)?;
        Ok(self.inner.log.read_raw(p, key_len)?)
    }

    fn key_len(&self, index: u8) -> Result<usize, LedgerError> {
        self.inner
            .table(index)
            .map(|t| t.spec().key_len)
            .ok_or_else(|| LedgerError::Misuse(format!("no index {index}")))
    }

    /// Walks every record of the log (for a check of every byte).
    pub fn walk(
        &self,
        f: &mut dyn FnMut(Walked) -> Result<(), LogError>,
    ) -> Result<(), LedgerError> {
        Ok(self.inner.log.walk(0, self.end(), f)?)
    }

    /// The files of the ledger and their sizes.
    pub fn files(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.inner.dir) {
            for e in rd.flatten() {
                let len = e.metadata().map_or(0, |m| m.len());
                out.push((e.file_name().to_string_lossy().into_owned(), len));
            }
        }
        out.sort();
        out
    }

    /// The log's path.
    pub fn log_path(&self) -> &Path {
        self.inner.log.path()
    }

    /// Runs of each index (name, runs, entries), for operators.
    pub fn runs(&self) -> Vec<(&'static str, usize, u64)> {
        self.inner
            .tables
            .iter()
            .map(|t| {
                let runs = t.runs();
                (
                    t.spec().name,
                    runs.len(),
                    runs.iter().map(|r| r.len()).sum(),
                )
            })
            .collect()
    }

    /// Writes every index's newest changes as runs now (after the
    /// checkpoints asked before), once the owner has made everything up to
    /// the log's end durable, and waits for it.
    pub fn checkpoint_now(&self) -> Result<(), LedgerError> {
        let (tx, rx) = mpsc::channel();
        let job = Job::Checkpoint {
            at: self.end(),
            frozen: self.inner.freeze_all(),
            done: Some(tx),
        };
        match lock(&self.jobs).as_ref() {
            Some(jobs) => jobs
                .send(job)
                .map_err(|_| LedgerError::Misuse("the checkpoint thread is gone".into()))?,
            None => return Err(LedgerError::Misuse("the ledger is closing".into())),
        }
        rx.recv()
            .map_err(|_| LedgerError::Misuse("the checkpoint thread is gone".into()))?
            .map_err(LedgerError::Misuse)
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.durable_changed.notify_all();
        lock(&self.jobs).take();
        if let Some(w) = lock(&self.worker).take() {
            let _ = w.join();
        }
    }
}

impl Inner {
    /// A body's payload as given: `stored` decompressed with the index's
    /// dictionary `codec` (0: as stored).
    fn unpack(
        &self,
        index: u8,
        p: Ptr,
        codec: u8,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, LedgerError> {
        if codec == 0 {
            return Ok(stored);
        }
        let damaged = |reason: String| {
            LedgerError::Log(LogError::Damaged {
                path: self.log.path().display().to_string(),
                offset: p.offset,
                reason,
            })
        };
        let d = self.dicts.get(index, codec).ok_or_else(|| {
            damaged(format!(
                "compressed with dictionary {codec}, which is not stored"
            ))
        })?;
        d.decompress(&stored).map_err(damaged)
    }

    /// Puts every stored dictionary in place (at open); a damaged one is
    /// named (the bodies that need it are reported when read).
    fn load_dicts(&self) -> Vec<Damage> {
        let mut damage = Vec::new();
        let Some(t) = self.table(DICTS) else {
            return damage;
        };
        let mut found = Vec::new();
        t.scan(&[0, 0], None, &mut |k, v| {
            if let (Some(&index), Some(&id), Some(p)) = (k.first(), k.get(1), Ptr::from_bytes(v)) {
                found.push((index, id, p));
            }
            true
        });
        for (index, id, p) in found {
            match self.log.read(p, 2) {
                Ok((0, bytes)) => self.dicts.install(index, id, &bytes),
                Ok(_) | Err(_) => {
                    tracing::error!(index, id, offset = p.offset, "a compression dictionary is damaged: the bodies it compressed cannot be read");
                    damage.push(Damage {
                        offset: p.offset,
                        len: u64::from(p.len),
                        reason: format!("dictionary {id} of index {index} is damaged"),
                    });
                }
            }
        }
        damage
    }

    fn table(&self, index: u8) -> Option<&Arc<dyn Table>> {
        let pos = self.by_id.get(index as usize).copied().flatten()?;
        self.tables.get(pos)
    }

    fn freeze_all(&self) -> Vec<(usize, Arc<dyn Frozen>)> {
        self.unfrozen.store(0, Ordering::Release);
        self.tables
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.freeze().map(|f| (i, f)))
            .collect()
    }

    fn run_path(&self, name: &RunName) -> PathBuf {
        self.dir.join(name.file())
    }

    /// Opens the runs the manifest names; returns where replay starts. A
    /// missing or damaged manifest or run means every index is rebuilt
    /// from the whole log (damaged files kept aside, named in the log).
    fn load_runs(&self, durable_end: u64) -> u64 {
        let manifest = match Manifest::read(&self.dir) {
            Ok(Some(m)) if m.checkpoint <= durable_end => Some(m),
            Ok(Some(m)) => {
                tracing::error!(
                    checkpoint = m.checkpoint,
                    durable_end,
                    "the ledger's manifest covers more of the log than was committed: rebuilding every index from the log"
                );
                None
            }
            Ok(None) => Some(Manifest::default()),
            Err(e) => {
                tracing::error!(error = %e, "the ledger's manifest is unreadable: rebuilding every index from the log");
                None
            }
        };
        let mut loaded: Option<(Manifest, Vec<Vec<Arc<Run>>>)> = None;
        if let Some(m) = manifest {
            let mut per_table: Vec<Vec<Arc<Run>>> = vec![Vec::new(); self.tables.len()];
            let mut sound = true;
            for name in &m.runs {
                let path = self.run_path(name);
                match Run::open(&path) {
                    Ok(run) if Some(run.index) == Some(name.index) => {
                        let pos = self.by_id.get(name.index as usize).copied().flatten();
                        match pos.and_then(|p| per_table.get_mut(p)) {
                            Some(list) => list.push(Arc::new(run)),
                            None => sound = false,
                        }
                    }
                    Ok(_) => sound = false,
                    Err(e) => {
                        tracing::error!(error = %e, "a run of the ledger is damaged: kept aside, every index is rebuilt from the log");
                        set_aside(&path);
                        sound = false;
                    }
                }
            }
            if sound {
                loaded = Some((m, per_table));
            }
        }
        let (manifest, per_table) =
            loaded.unwrap_or_else(|| (Manifest::default(), vec![Vec::new(); self.tables.len()]));
        // Files no manifest names: runs of a checkpoint or merge that never
        // finished, or of a rebuild's predecessor.
        let named: Vec<String> = manifest.runs.iter().map(|r| r.file()).collect();
        let mut next = manifest.next;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(r) = RunName::parse(&file) {
                    next = next.max(r.number + 1);
                    if !named.contains(&file) {
                        let _ = std::fs::remove_file(e.path());
                    }
                } else if file.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for (t, runs) in self.tables.iter().zip(per_table) {
            t.set_runs(runs);
        }
        let from = manifest.checkpoint;
        *lock(&self.manifest) = Manifest { next, ..manifest };
        from
    }

    /// Replays the log from `from` to `to` into the indexes, writing
    /// checkpoints as memory fills (a rebuild of the whole log stays bounded).
    fn replay(&self, from: u64, to: u64) -> Result<Vec<Damage>, LedgerError> {
        let mut damage = Vec::new();
        let mut applied = 0usize;
        let mut pending_checkpoint: Option<u64> = None;
        self.log.walk(from, to, &mut |w| {
            match w {
                Walked::Damage {
                    offset,
                    len,
                    reason,
                } => {
                    tracing::error!(offset, len, "damage in the ledger's log: {reason}");
                    damage.push(Damage {
                        offset,
                        len,
                        reason,
                    });
                }
                Walked::Record(r, check) => {
                    let Some(t) = self.table(r.header.index) else {
                        damage.push(Damage {
                            offset: r.ptr.offset,
                            len: u64::from(r.ptr.len),
                            reason: format!("a record of an unknown index {}", r.header.index),
                        });
                        return Ok(());
                    };
                    let spec = t.spec();
                    match (r.header.op, spec.bodies) {
                        (Op::Delete, _) => t.apply(&r.header.key, None),
                        (Op::Put, true) => t.apply(&r.header.key, Some(&r.ptr.to_bytes())),
                        (Op::Put, false) => {
                            if check.is_err() || r.payload.len() != spec.val_len {
                                damage.push(Damage {
                                    offset: r.ptr.offset,
                                    len: u64::from(r.ptr.len),
                                    reason: format!("a {} record's value is damaged", spec.name),
                                });
                                return Ok(());
                            }
                            t.apply(&r.header.key, Some(&r.payload));
                        }
                    }
                    if let (Op::Put, true, Err(reason)) = (r.header.op, spec.bodies, &check) {
                        tracing::error!(
                            offset = r.ptr.offset,
                            "damage in the ledger's log: {reason}"
                        );
                        damage.push(Damage {
                            offset: r.ptr.offset,
                            len: u64::from(r.ptr.len),
                            reason: reason.clone(),
                        });
                    }
                    applied += 1;
                    if applied >= self.options.checkpoint_entries {
                        applied = 0;
                        pending_checkpoint =
                            Some(r.ptr.offset + (r.header.size() as u64) + u64::from(r.ptr.len));
                    }
                }
            }
            if let Some(at) = pending_checkpoint.take() {
                let frozen = self.freeze_all();
                self.checkpoint(at, frozen).map_err(|e| LogError::Io {
                    path: self.dir.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            }
            Ok(())
        })?;
        self.unfrozen.store(applied, Ordering::Release);
        Ok(damage)
    }

    /// Writes frozen tables as runs covering the log up to `at` (already
    /// durable), records them in the manifest, and puts them in place.
    fn checkpoint(
        &self,
        at: u64,
        frozen: Vec<(usize, Arc<dyn Frozen>)>,
    ) -> Result<(), LedgerError> {
        let _held = lock(&self.runs_lock);
        let mut manifest = lock(&self.manifest).clone();
        let mut made = Vec::new();
        for (pos, f) in &frozen {
            let Some(t) = self.tables.get(*pos) else {
                continue;
            };
            let spec = t.spec();
            let name = RunName {
                index: spec.id,
                number: manifest.next,
            };
            manifest.next += 1;
            let path = self.run_path(&name);
            f.write(&path, &spec)?;
            made.push((*pos, f.id(), name, Arc::new(Run::open(&path)?)));
        }
        meldnet_core::append_file::sync_dir(&self.dir).map_err(|source| LogError::Io {
            path: self.dir.display().to_string(),
            source,
        })?;
        // Each index's new run goes after its older ones.
        for (_, _, name, _) in &made {
            let after = manifest
                .runs
                .iter()
                .rposition(|r| r.index == name.index)
                .map_or(manifest.runs.len(), |i| i + 1);
            manifest.runs.insert(after, *name);
        }
        manifest.checkpoint = manifest.checkpoint.max(at);
        manifest.write(&self.dir)?;
        *lock(&self.manifest) = manifest;
        for (pos, id, _, run) in made {
            if let Some(t) = self.tables.get(pos) {
                t.install(id, Some(run));
            }
        }
        Ok(())
    }

    /// Merges runs where an index holds too many or a newer one has grown
    /// to half the one before it (the total rewritten stays a small
    /// multiple of what is held).
    fn merge_all(&self) -> Result<(), LedgerError> {
        let _held = lock(&self.runs_lock);
        for t in &self.tables {
            loop {
                let runs = t.runs();
                let n = runs.len();
                if n < 2 {
                    break;
                }
                // Tiered: the newest runs of one size (within a factor of
                // four of the newest) are merged once there are four of
                // them, so an entry is rewritten about log4 of the runs'
                // growth times; and the newest two whenever there are too
                // many runs.
                let newest = runs.last().map_or(0, |r| r.len()).max(1);
                let same = runs
                    .iter()
                    .rev()
                    .take_while(|r| r.len() <= newest.saturating_mul(4))
                    .count();
                let take = if same >= TIER {
                    same
                } else if n > self.options.max_runs {
                    2
                } else {
                    break;
                };
                let group: Vec<Arc<Run>> = runs.get(n - take..).unwrap_or_default().to_vec();
                self.merge(t, &group, take == n)?;
                if self.stopping.load(Ordering::Acquire) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn merge(
        &self,
        t: &Arc<dyn Table>,
        pair: &[Arc<Run>],
        bottom: bool,
    ) -> Result<(), LedgerError> {
        let spec: Spec = t.spec();
        let mut manifest = lock(&self.manifest).clone();
        let name = RunName {
            index: spec.id,
            number: manifest.next,
        };
        manifest.next += 1;
        let path = self.run_path(&name);
        merge_runs(pair, &path, &spec, bottom)?;
        let merged = Arc::new(Run::open(&path)?);
        meldnet_core::append_file::sync_dir(&self.dir).map_err(|source| LogError::Io {
            path: self.dir.display().to_string(),
            source,
        })?;
        let old: Vec<String> = pair
            .iter()
            .filter_map(|r| {
                r.path()
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .collect();
        let at = manifest.runs.iter().position(|r| old.contains(&r.file()));
        manifest.runs.retain(|r| !old.contains(&r.file()));
        manifest.runs.insert(
            at.unwrap_or(manifest.runs.len()).min(manifest.runs.len()),
            name,
        );
        manifest.write(&self.dir)?;
        *lock(&self.manifest) = manifest;
        t.replace_runs(pair, merged);
        for r in pair {
            let _ = std::fs::remove_file(r.path());
        }
        Ok(())
    }

    /// The checkpoint thread: each job waits until its place is durable,
    /// then becomes runs; merges follow. A failure is logged and the job
    /// tried again (its tables stay readable in memory meanwhile).
    fn work(&self, jobs: mpsc::Receiver<Job>) {
        // Below the writer, like the request threads: checkpoints are
        // background work.
        // SAFETY: setpriority on the calling thread only changes its nice value.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 5);
        }
        while let Ok(job) = jobs.recv() {
            let (at, frozen, done) = match job {
                Job::Train(index, samples) => {
                    self.dicts.train(index, &samples);
                    continue;
                }
                Job::Checkpoint { at, frozen, done } => (at, frozen, done),
            };
            {
                let mut d = lock(&self.durable);
                while *d < at {
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    d = self
                        .durable_changed
                        .wait_timeout(d, std::time::Duration::from_millis(200))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
            loop {
                match self.checkpoint(at, frozen.clone()) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "a checkpoint of the ledger failed: trying again");
                        if self.stopping.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            }
            let merged = self.merge_all();
            if let Err(e) = &merged {
                tracing::error!(error = %e, "a merge of the ledger's runs failed (tried again later)");
            }
            if let Some(done) = done {
                let _ = done.send(merged.map_err(|e| e.to_string()));
            }
        }
    }
}

/// Keeps a damaged file aside, under a name that says so (never deleted:
/// someone may want to look at what was there). The hub's PDQ runs of
/// cases, kept in the same format, use it too.
pub fn set_aside(path: &Path) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".damaged-{secs}"));
    let _ = std::fs::rename(path, PathBuf::from(to));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use std::collections::BTreeMap as Model;

    const BODIES: u8 = 1;
    const VALUES: u8 = 2;

    fn tables() -> Vec<Arc<dyn Table>> {
        vec![
            Arc::new(Index::<8, 12>::new(BODIES, "bodies", true)),
            Arc::new(Index::<4, 3>::new(VALUES, "values", false)),
        ]
    }

    fn open(dir: &Path, end: u64, every: usize) -> (Ledger, Vec<Damage>) {
        Ledger::open(
            dir,
            tables(),
            end,
            Options {
                checkpoint_entries: every,
                max_runs: 4,
            },
        )
        .unwrap()
    }

    #[derive(Default, Clone, PartialEq, Debug)]
    struct State {
        bodies: Model<u64, Vec<u8>>,
        values: Model<u32, [u8; 3]>,
    }

    /// Commits `n` batches of changes, mirroring them in `model`; returns
    /// the ends after each batch.
    fn work(l: &Ledger, model: &mut State, n: usize, seed: u64) -> Vec<u64> {
        let mut rng = seed;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut ends = Vec::new();
        for _ in 0..n {
            let mut b = l.batch();
            for _ in 0..20 {
                let r = next();
                let body_key = r % 300;
                match r % 4 {
                    0 => {
                        let body = vec![(r >> 8) as u8; (r % 40) as usize];
                        let p = b.put_body(BODIES, &body_key.to_be_bytes(), |o| {
                            o.extend_from_slice(&body)
                        });
                        assert_eq!(l.body_in(&b, BODIES, p).unwrap(), body);
                        model.bodies.insert(body_key, body);
                    }
                    1 => {
                        b.delete(BODIES, &body_key.to_be_bytes());
                        model.bodies.remove(&body_key);
                    }
                    2 => {
                        let k = (r % 500) as u32;
                        let v = [(r >> 9) as u8, (r >> 17) as u8, 7];
                        b.put(VALUES, &k.to_be_bytes(), &v);
                        model.values.insert(k, v);
                    }
                    _ => {
                        let k = (r % 500) as u32;
                        b.delete(VALUES, &k.to_be_bytes());
                        model.values.remove(&k);
                    }
                }
            }
            let end = l.commit(b).unwrap();
            l.made_durable(end);
            ends.push(end);
        }
        ends
    }

    fn state(l: &Ledger) -> State {
        let mut s = State::default();
        l.scan(BODIES, &[0; 8], None, &mut |k, v| {
            let p = Ptr::from_bytes(v).unwrap();
            s.bodies.insert(
                u64::from_be_bytes(k.try_into().unwrap()),
                l.body(BODIES, p).unwrap(),
            );
            true
        });
        l.scan(VALUES, &[0; 4], None, &mut |k, v| {
            s.values.insert(
                u32::from_be_bytes(k.try_into().unwrap()),
                v.try_into().unwrap(),
            );
            true
        });
        for (k, body) in &s.bodies {
            let p = Ptr::from_bytes(&l.get(BODIES, &k.to_be_bytes()).unwrap()).unwrap();
            assert_eq!(&l.body(BODIES, p).unwrap(), body);
        }
        s
    }

    #[test]
    fn what_was_committed_reads_back_across_checkpoints_merges_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = State::default();
        let (l, damage) = open(dir.path(), 0, 150);
        assert!(damage.is_empty());
        let ends = work(&l, &mut model, 60, 7);
        assert_eq!(state(&l), model);
        l.checkpoint_now().unwrap();
        assert_eq!(state(&l), model);
        let ends2 = work(&l, &mut model, 40, 11);
        let end = *ends2.last().unwrap();
        assert_eq!(state(&l), model);
        // Some runs were written and merged meanwhile.
        assert!(
            l.runs().iter().any(|(_, runs, _)| *runs > 0),
            "{:?}",
            l.runs()
        );
        drop(l);
        let (l, damage) = open(dir.path(), end, 150);
        assert!(damage.is_empty());
        assert_eq!(state(&l), model);
        assert!(ends.len() == 60);
        let manifest = Manifest::read(dir.path()).unwrap().unwrap();
        assert!(manifest.checkpoint <= end);
    }

    #[test]
    fn a_batch_the_owner_never_committed_is_gone_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = State::default();
        let (l, _) = open(dir.path(), 0, 1 << 20);
        let ends = work(&l, &mut model, 10, 3);
        let committed = model.clone();
        // Written and synced, but the owner's commit never recorded it.
        let mut uncommitted = model.clone();
        work(&l, &mut uncommitted, 5, 99);
        drop(l);
        let (l, _) = open(dir.path(), *ends.last().unwrap(), 1 << 20);
        assert_eq!(state(&l), committed);
        assert_eq!(
            std::fs::metadata(l.log_path()).unwrap().len(),
            *ends.last().unwrap()
        );
        // And work goes on from there.
        let mut model = committed;
        let more = work(&l, &mut model, 3, 5);
        drop(l);
        let (l, _) = open(dir.path(), *more.last().unwrap(), 1 << 20);
        assert_eq!(state(&l), model);
    }

    #[test]
    fn a_damaged_manifest_or_run_is_rebuilt_from_the_log_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = State::default();
        let (l, _) = open(dir.path(), 0, 100);
        let ends = work(&l, &mut model, 50, 21);
        l.checkpoint_now().unwrap();
        let end = *ends.last().unwrap();
        drop(l);
        // A flipped byte in a run.
        let run = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("run-"))
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&run).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&run, &bytes).unwrap();
        let (l, _) = open(dir.path(), end, 100);
        assert_eq!(state(&l), model);
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .count();
        assert_eq!(aside, 1);
        drop(l);
        // A flipped byte in the manifest.
        let path = dir.path().join(crate::manifest::MANIFEST);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (l, _) = open(dir.path(), end, 100);
        assert_eq!(state(&l), model);
    }

    #[test]
    fn damage_in_the_log_is_named_and_the_rest_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (l, _) = open(dir.path(), 0, 1 << 20);
        let mut b = l.batch();
        let mut ptrs = Vec::new();
        for i in 0u64..10 {
            ptrs.push(b.put_body(BODIES, &i.to_be_bytes(), |o| {
                o.extend_from_slice(format!("body {i}").as_bytes())
            }));
        }
        let end = l.commit(b).unwrap();
        l.made_durable(end);
        drop(l);
        let log = dir.path().join(crate::log::LOG_FILE);
        let mut bytes = std::fs::read(&log).unwrap();
        // A payload byte of body 3, a header byte of body 6.
        let p3 = ptrs[3].offset as usize + crate::record::FIXED + 8;
        bytes[p3] ^= 0x40;
        bytes[ptrs[6].offset as usize + 2] ^= 0x40;
        std::fs::write(&log, &bytes).unwrap();
        let (l, damage) = open(dir.path(), end, 1 << 20);
        assert_eq!(damage.len(), 2, "{damage:?}");
        assert_eq!(damage[0].offset, ptrs[3].offset);
        assert_eq!(damage[1].offset, ptrs[6].offset);
        assert_eq!(damage[1].len, ptrs[7].offset - ptrs[6].offset);
        let e = l.body(BODIES, ptrs[3]).unwrap_err().to_string();
        assert!(e.contains(&format!("offset {}", ptrs[3].offset)), "{e}");
        // Body 6's header is gone: its key is not known.
        assert_eq!(l.get(BODIES, &6u64.to_be_bytes()), None);
        for i in [0u64, 1, 2, 4, 5, 7, 8, 9] {
            let p = Ptr::from_bytes(&l.get(BODIES, &i.to_be_bytes()).unwrap()).unwrap();
            assert_eq!(l.body(BODIES, p).unwrap(), format!("body {i}").as_bytes());
        }
    }

    #[test]
    fn bodies_are_compressed_with_a_dictionary_of_their_own_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let tables = || -> Vec<Arc<dyn Table>> {
            vec![Arc::new(
                Index::<8, 12>::new(BODIES, "bodies", true).compressed(),
            )]
        };
        let body = |i: u64| {
            format!("decision {i}: routed to spiffe://eu.meldnet.test/agency/DE/bka and spiffe://eu.meldnet.test/node/DE because hosting_country DE is a member state; case {:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes()
        };
        let (l, _) = Ledger::open(dir.path(), tables(), 0, Options::default()).unwrap();
        let mut ptrs = Vec::new();
        let mut end;
        let mut i = 0u64;
        // Bodies until the dictionary is trained and some are compressed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let mut b = l.batch();
            for _ in 0..100 {
                let raw = body(i);
                ptrs.push((
                    i,
                    b.put_body(BODIES, &i.to_be_bytes(), |o| o.extend_from_slice(&raw)),
                ));
                i += 1;
            }
            end = l.commit(b).unwrap();
            l.made_durable(end);
            let last = ptrs.last().unwrap().1;
            if (last.len as usize) < body(i - 1).len() / 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never compressed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (n, p) in &ptrs {
            assert_eq!(l.body(BODIES, *p).unwrap(), body(*n));
        }
        drop(l);
        let (l, damage) = Ledger::open(dir.path(), tables(), end, Options::default()).unwrap();
        assert!(damage.is_empty(), "{damage:?}");
        for (n, p) in &ptrs {
            assert_eq!(l.body(BODIES, *p).unwrap(), body(*n));
        }
        // A flipped byte in a compressed body: that body, named by offset.
        let (n, p) = *ptrs.last().unwrap();
        drop(l);
        let log = dir.path().join(crate::log::LOG_FILE);
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[p.offset as usize + FIXED + 8 + 3] ^= 0x10;
        std::fs::write(&log, &bytes).unwrap();
        let (l, _) = Ledger::open(dir.path(), tables(), end, Options::default()).unwrap();
        let e = l.body(BODIES, p).unwrap_err().to_string();
        assert!(e.contains(&format!("offset {}", p.offset)), "{e}");
        let (m, q) = ptrs[ptrs.len() - 2];
        assert_eq!(l.body(BODIES, q).unwrap(), body(m));
        assert_ne!(n, m);
    }
}
