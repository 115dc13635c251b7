//! The PDQ hashes of every case: the newest in memory (a growable table,
//! searchable at once), the rest in runs on disk, memory-mapped, so that
//! the operating system's page cache is what holds them: memory stays
//! bounded however many cases there are, and a start maps the runs and
//! reads only the keys records after them.
//!
//! A run is made from the store's keys records (never from memory, which
//! may hold a placement the store refused), in the order they were stored,
//! up to the newest the store has made durable: a crash never leaves a run
//! holding a hash the store lost. The manifest (the ledger's format, in
//! `cases/`) says which runs there are and up to which record they hold.
//! A damaged run or manifest is set aside and every run made again from
//! the store.
//!
//! Run file: "MLDPDQR1", the entries `n` (u64 LE), the CRC-32 of the case
//! ids (u32 LE), 4 zero bytes; then `n` case ids (16 bytes each, entry
//! order); then the `PdqIndex` bytes (`meldnet-pdq`'s checked form).

use super::{CaseError, CaseSource};
use meldnet_core::append_file::sync_dir;
use meldnet_core::{CaseId, PdqHash};
use meldnet_ledger::{set_aside, Manifest, RunName};
use meldnet_pdq::{NearSet, PdqIndex, PdqIndexView, PdqTable};
use meldnet_pdq::{MATCH_THRESHOLD, MIN_MATCH_QUALITY};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"MLDPDQR1";
const HEADER: usize = 24;

/// Hashes the in-memory table takes before it becomes a run.
pub const FREEZE_AT: usize = 1 << 20;

/// Why runs could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A run is not sound.
    #[error("{path}: damaged PDQ run: {reason}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<RunsError> for CaseError {
    fn from(e: RunsError) -> Self {
        CaseError::Unavailable(e.to_string())
    }
}

/// Hashes in memory, each with its case.
struct Table {
    pdq: PdqTable,
    cases: Vec<CaseId>,
    /// The newest placement that added to it.
    last_stamp: u64,
}

impl Table {
    fn new() -> Table {
        Table {
            pdq: PdqTable::default(),
            cases: Vec::new(),
            last_stamp: 0,
        }
    }

    fn each(&self, h: &PdqHash, f: &mut impl FnMut(u32, CaseId)) {
        self.pdq.each_match(h, |d, id| {
            if let Some(c) = self.cases.get(id as usize) {
                f(d, *c);
            }
        });
    }
}

/// A run on disk.
struct Run {
    /// Borrows `map`, declared first so that it is dropped first.
    view: PdqIndexView<'static>,
    cases_at: usize,
    n: usize,
    map: memmap2::Mmap,
    name: RunName,
}

impl Run {
    fn open(path: &Path, name: RunName) -> Result<Run, RunsError> {
        let damaged = |reason: &str| RunsError::Damaged {
            path: path.display().to_string(),
            reason: reason.into(),
        };
        let file = std::fs::File::open(path).map_err(|source| RunsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // SAFETY: runs are written once, renamed into place when complete
        // and never changed; the mapping is read-only.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| RunsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let header = map
            .get(..HEADER)
            .ok_or_else(|| damaged("shorter than its header"))?;
        if header.get(..8) != Some(&MAGIC[..]) {
            return Err(damaged("not a PDQ run"));
        }
        let word = |at: usize, len: usize| -> Option<u64> {
            let b = header.get(at..at + len)?;
            let mut w = [0u8; 8];
            w.get_mut(..len)?.copy_from_slice(b);
            Some(u64::from_le_bytes(w))
        };
        let n = word(8, 8).ok_or_else(|| damaged("entries"))? as usize;
        let crc = word(16, 4).ok_or_else(|| damaged("checksum"))? as u32;
        let ids_end = n
            .checked_mul(16)
            .and_then(|b| b.checked_add(HEADER))
            .filter(|e| *e <= map.len())
            .ok_or_else(|| damaged("the case ids run past the end"))?;
        let ids = map.get(HEADER..ids_end).unwrap_or_default();
        if crc32fast::hash(ids) != crc {
            return Err(damaged("the case ids' checksum fails"));
        }
        let bytes = map.get(ids_end..).unwrap_or_default();
        // SAFETY: `bytes` lies in `map`, whose memory stays where it is for
        // as long as the run exists (a mapping does not move with its
        // owner), and the view is dropped before the map (field order).
        let bytes: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let view = PdqIndexView::new(bytes).map_err(|e| damaged(&e.to_string()))?;
        if view.len() != n {
            return Err(damaged("the index and the case ids differ in length"));
        }
        // The check read every page: hand them back, so that what stays
        // resident is what searches touch, not the whole run (they stay in
        // the page cache, shared, and come back when read).
        // SAFETY: a read-only, file-backed shared mapping: dropping its
        // pages only makes the next read fetch them again from the file.
        let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        Ok(Run {
            view,
            cases_at: HEADER,
            n,
            map,
            name,
        })
    }

    fn case(&self, entry: u32) -> Option<CaseId> {
        let at = self.cases_at + entry as usize * 16;
        let b: [u8; 16] = self.map.get(at..at + 16)?.try_into().ok()?;
        Some(CaseId::from_bytes(b))
    }

    fn each(&self, h: &PdqHash, f: &mut impl FnMut(u32, CaseId)) {
        for m in self.view.search(h, MATCH_THRESHOLD) {
            if let Some(c) = self.case(m.entry) {
                f(m.distance, c);
            }
        }
    }
}

/// Writes a run of `n` hashes with their cases at `path` (through a file
/// beside it, synced, then renamed). `entries` gives them, the same each
/// time it is called: the run is written in several passes over them, so
/// that neither they nor the index need be held in memory whole.
fn write_run<I: Iterator<Item = (PdqHash, CaseId)>>(
    path: &Path,
    n: usize,
    entries: impl Fn() -> I,
) -> Result<(), RunsError> {
    use std::io::Write;
    let io = |source| RunsError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut crc = crc32fast::Hasher::new();
    for (_, c) in entries().take(n) {
        crc.update(c.as_bytes());
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(n as u64).to_le_bytes());
    header.extend_from_slice(&crc.finalize().to_le_bytes());
    header.extend_from_slice(&[0u8; 4]);
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header).map_err(io)?;
    for (_, c) in entries().take(n) {
        out.write_all(c.as_bytes()).map_err(io)?;
    }
    PdqIndex::write_each(n, || entries().map(|(h, _)| h), &mut out).map_err(io)?;
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The PDQ hashes of every case.
pub struct PdqRuns {
    /// Where runs lie (none: everything stays in memory, for tests).
    dir: Option<PathBuf>,
    freeze_at: usize,
    active: Table,
    /// Tables waiting to become runs, oldest first (searched meanwhile).
    frozen: Vec<Arc<Table>>,
    runs: Vec<Arc<Run>>,
    /// The newest keys record the runs hold.
    covered: u64,
    next_run: u64,
}

impl PdqRuns {
    /// Everything in memory (tests, small stores).
    pub fn in_memory() -> PdqRuns {
        PdqRuns {
            dir: None,
            freeze_at: usize::MAX,
            active: Table::new(),
            frozen: Vec::new(),
            runs: Vec::new(),
            covered: 0,
            next_run: 1,
        }
    }

    /// The runs in `dir` (made when missing); the in-memory table becomes
    /// a run at `freeze_at` hashes. A damaged run or manifest is set aside
    /// and the runs are made again from the store (the log says where).
    pub fn open(dir: &Path, freeze_at: usize) -> Result<PdqRuns, RunsError> {
        let io = |source| RunsError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut runs = PdqRuns {
            dir: Some(dir.to_path_buf()),
            freeze_at: freeze_at.max(1),
            ..PdqRuns::in_memory()
        };
        let manifest = match Manifest::read(dir) {
            Ok(m) => m.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "the PDQ runs' manifest is damaged: made again from the store");
                set_aside(&dir.join(meldnet_ledger::MANIFEST));
                Manifest::default()
            }
        };
        let mut opened = Vec::new();
        for name in &manifest.runs {
            let path = dir.join(name.file());
            match Run::open(&path, *name) {
                Ok(r) => opened.push(Arc::new(r)),
                Err(e) => {
                    tracing::error!(error = %e, "a PDQ run is damaged: every run is made again from the store");
                    set_aside(&path);
                    opened.clear();
                    break;
                }
            }
        }
        let sound = opened.len() == manifest.runs.len();
        runs.next_run = manifest.next.max(1);
        if sound {
            runs.runs = opened;
            runs.covered = manifest.checkpoint;
        }
        // Files no manifest names: a run that was never recorded.
        let named: Vec<String> = if sound {
            manifest.runs.iter().map(|r| r.file()).collect()
        } else {
            Vec::new()
        };
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let f = e.file_name().to_string_lossy().into_owned();
                if let Some(r) = RunName::parse(&f) {
                    runs.next_run = runs.next_run.max(r.number + 1);
                    if !named.contains(&f) {
                        let _ = std::fs::remove_file(e.path());
                    }
                } else if f.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(runs)
    }

    /// Hashes held, in memory and in runs.
    pub fn len(&self) -> usize {
        self.active.cases.len()
            + self.frozen.iter().map(|t| t.cases.len()).sum::<usize>()
            + self.runs.iter().map(|r| r.n).sum::<usize>()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs on disk.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The nearest match within the threshold: (distance, case); between
    /// cases at the same distance, the older (the lower id).
    pub fn best(&self, h: &PdqHash) -> Option<(u32, CaseId)> {
        let mut best: Option<(u32, CaseId)> = None;
        let mut take = |d: u32, c: CaseId| {
            if best.is_none_or(|b| (d, c) < b) {
                best = Some((d, c));
            }
        };
        self.active.each(h, &mut take);
        for t in &self.frozen {
            t.each(h, &mut take);
        }
        for r in &self.runs {
            r.each(h, &mut take);
        }
        best
    }

    /// [`best`](Self::best) for many hashes at once: the tables in memory
    /// are walked once for all of them, in memory order (a batch of a
    /// thousand hashes costs about half as much a hash as one at a time).
    pub fn best_many(&self, hashes: &[PdqHash]) -> Vec<Option<(u32, CaseId)>> {
        let mut best: Vec<Option<(u32, CaseId)>> = vec![None; hashes.len()];
        let mut take = |i: usize, d: u32, c: CaseId| {
            if let Some(b) = best.get_mut(i) {
                if b.is_none_or(|b| (d, c) < b) {
                    *b = Some((d, c));
                }
            }
        };
        for t in std::iter::once(&self.active).chain(self.frozen.iter().map(|t| &**t)) {
            for (i, found) in t.pdq.matches_many(hashes).into_iter().enumerate() {
                for (id, d) in found {
                    if let Some(c) = t.cases.get(id as usize) {
                        take(i, d, *c);
                    }
                }
            }
        }
        for r in &self.runs {
            for (i, h) in hashes.iter().enumerate() {
                r.each(h, &mut |d, c| take(i, d, c));
            }
        }
        best
    }

    /// Adds a hash of `case` (placed at `stamp`), if of matchable quality.
    pub fn add(&mut self, h: PdqHash, case: CaseId, quality: u8, stamp: u64) {
        if quality < MIN_MATCH_QUALITY {
            return;
        }
        let id = self.active.cases.len() as u64;
        self.active.pdq.add(h, id, quality);
        self.active.cases.push(case);
        self.active.last_stamp = stamp;
        if self.dir.is_some() && self.active.cases.len() >= self.freeze_at {
            let full = std::mem::replace(&mut self.active, Table::new());
            self.frozen.push(Arc::new(full));
        }
    }

    /// Adds the hashes of every keys record the runs do not hold: at start,
    /// and after a reload. Runs are made as the table fills (every record
    /// read is stored, so durable).
    pub fn catch_up(&mut self, source: &dyn CaseSource) -> Result<(), CaseError> {
        let mut batch: Vec<(PdqHash, CaseId, u8)> = Vec::new();
        let mut last = self.covered;
        let mut failed: Option<CaseError> = None;
        source.case_keys_since(self.covered, &mut |rec| {
            let Ok(case) = <[u8; 16]>::try_from(rec.case_id.as_slice()) else {
                failed = Some(CaseError::Damaged(super::DamagedCase(format!(
                    "keys record {}: case_id",
                    rec.seq
                ))));
                return Ok(false);
            };
            let case = CaseId::from_bytes(case);
            for (h, q) in rec.pdqs.iter().zip(rec.pdq_qualities.iter()) {
                let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) else {
                    continue;
                };
                if *q >= MIN_MATCH_QUALITY {
                    batch.push((PdqHash(h), case, *q));
                }
            }
            last = rec.seq;
            if self.dir.is_some() && batch.len() >= self.freeze_at {
                if let Err(e) = self.make_run(&batch, last) {
                    failed = Some(e.into());
                    return Ok(false);
                }
                batch.clear();
            }
            Ok(true)
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        let first = self.active.cases.len() as u64;
        let entries: Vec<(PdqHash, u64, u8)> = batch
            .iter()
            .enumerate()
            .map(|(i, (h, _, q))| (*h, first + i as u64, *q))
            .collect();
        self.active.pdq.extend(&entries);
        self.active.cases.extend(batch.iter().map(|(_, c, _)| *c));
        Ok(())
    }

    /// Writes `hashes` as a run holding the keys records up to `covered`,
    /// records it in the manifest, and puts it in place.
    fn make_run(
        &mut self,
        hashes: &[(PdqHash, CaseId, u8)],
        covered: u64,
    ) -> Result<(), RunsError> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let name = RunName {
            index: 0,
            number: self.next_run,
        };
        let path = dir.join(name.file());
        write_run(&path, hashes.len(), || {
            hashes.iter().map(|(h, c, _)| (*h, *c))
        })?;
        let run = Arc::new(Run::open(&path, name)?);
        self.next_run += 1;
        self.runs.push(run);
        self.covered = covered;
        self.write_manifest()
    }

    fn write_manifest(&self) -> Result<(), RunsError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let io = |source| RunsError::Io {
            path: dir.display().to_string(),
            source,
        };
        sync_dir(dir).map_err(io)?;
        Manifest {
            checkpoint: self.covered,
            next: self.next_run,
            runs: self.runs.iter().map(|r| r.name).collect(),
        }
        .write(dir)
        .map_err(|e| RunsError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Drops every run and table and reads every keys record again (a
    /// reload after an operator's split: slow, and rare).
    pub fn rebuild(&mut self, source: &dyn CaseSource) -> Result<(), CaseError> {
        let old: Vec<PathBuf> = match &self.dir {
            Some(d) => self.runs.iter().map(|r| d.join(r.name.file())).collect(),
            None => Vec::new(),
        };
        self.runs.clear();
        self.frozen.clear();
        self.active = Table::new();
        self.covered = 0;
        self.catch_up(source)?;
        self.write_manifest()?;
        for p in old {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    /// The oldest table waiting to become a run, with the newest placement
    /// it holds (the store must have made that durable first).
    pub fn waiting(&self) -> Option<u64> {
        self.frozen.first().map(|t| t.last_stamp)
    }

    /// Hashes of the oldest frozen table (what its run will hold).
    pub fn waiting_len(&self) -> usize {
        self.frozen.first().map_or(0, |t| t.cases.len())
    }

    /// What the thread that makes runs needs: where, from which record,
    /// and the run's number.
    pub fn plan(&self) -> Option<(PathBuf, u64, RunName)> {
        let dir = self.dir.clone()?;
        let name = RunName {
            index: 0,
            number: self.next_run,
        };
        Some((dir.join(name.file()), self.covered, name))
    }

    /// Puts a run made by [`make_frozen_run`] from the records after
    /// `after` up to `covered` in place of the oldest frozen table. A run
    /// planned before the runs were made again (a reload) is dropped.
    pub fn install(
        &mut self,
        path: &Path,
        name: RunName,
        after: u64,
        covered: u64,
    ) -> Result<(), RunsError> {
        if after != self.covered || name.number < self.next_run {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        let run = Arc::new(Run::open(path, name)?);
        self.runs.push(run);
        self.covered = covered;
        self.next_run = self.next_run.max(name.number + 1);
        if !self.frozen.is_empty() {
            self.frozen.remove(0);
        }
        self.write_manifest()
    }
}

impl PdqRuns {
    /// The two newest runs when they should become one (the newer has grown
    /// to half the older, or there are many): fewer runs, fewer searches a
    /// hash. With the merged run's path and name.
    pub fn plan_merge(&self) -> Option<(Vec<Arc<RunHandle>>, PathBuf, RunName)> {
        let n = self.runs.len();
        let (older, newer) = (self.runs.get(n.checked_sub(2)?)?, self.runs.get(n - 1)?);
        if newer.n * 2 < older.n && n <= MAX_RUNS {
            return None;
        }
        let (path, _, name) = self.plan()?;
        Some((
            vec![
                Arc::new(RunHandle(older.clone())),
                Arc::new(RunHandle(newer.clone())),
            ],
            path,
            name,
        ))
    }

    /// Puts the merge of `pair` in their place (unless the runs changed
    /// meanwhile: then it is dropped).
    pub fn install_merge(
        &mut self,
        pair: &[Arc<RunHandle>],
        path: &Path,
        name: RunName,
    ) -> Result<(), RunsError> {
        let n = self.runs.len();
        let same = n >= 2
            && pair.len() == 2
            && self
                .runs
                .get(n - 2..)
                .is_some_and(|held| held.iter().zip(pair).all(|(a, b)| Arc::ptr_eq(a, &b.0)));
        if !same || name.number < self.next_run {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        let merged = Arc::new(Run::open(path, name)?);
        let old: Vec<PathBuf> = match &self.dir {
            Some(d) => pair.iter().map(|r| d.join(r.0.name.file())).collect(),
            None => Vec::new(),
        };
        self.runs.truncate(n - 2);
        self.runs.push(merged);
        self.next_run = self.next_run.max(name.number + 1);
        self.write_manifest()?;
        for p in old {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

/// A run held by the thread that merges it (its contents are read outside
/// the index's lock).
pub struct RunHandle(Arc<Run>);

/// Most runs before the newest two are merged whatever their sizes.
const MAX_RUNS: usize = 6;

/// Writes the merge of `pair` (oldest first) as one run at `path`.
pub fn merge_pair(pair: &[Arc<RunHandle>], path: &Path) -> Result<(), RunsError> {
    // Read from the two runs' maps at every pass: a merge of millions of
    // hashes holds no copy of them.
    let entries = || {
        pair.iter()
            .flat_map(|r| (0..r.0.n as u32).filter_map(|e| Some((r.0.view.hash(e)?, r.0.case(e)?))))
    };
    write_run(path, entries().count(), entries)
}

/// Makes the run of the keys records after `after` up to `upto` (durable),
/// outside the index's lock: returns the run's path; then
/// [`PdqRuns::install`] puts it in place.
///
/// `expected`, the hashes of the frozen table the run stands for, sizes the
/// one copy of them it holds (a vector grown by doubling could take twice).
pub fn make_frozen_run(
    source: &dyn CaseSource,
    path: &Path,
    (after, upto): (u64, u64),
    expected: usize,
) -> Result<(), CaseError> {
    let mut entries: Vec<(PdqHash, CaseId)> = Vec::with_capacity(expected);
    source.case_keys_since(after, &mut |rec| {
        if rec.seq > upto {
            return Ok(false);
        }
        let Ok(case) = <[u8; 16]>::try_from(rec.case_id.as_slice()) else {
            return Ok(true);
        };
        for (h, q) in rec.pdqs.iter().zip(rec.pdq_qualities.iter()) {
            if let (Ok(h), true) = (<[u8; 32]>::try_from(h.as_slice()), *q >= MIN_MATCH_QUALITY) {
                entries.push((PdqHash(h), CaseId::from_bytes(case)));
            }
        }
        Ok(true)
    })?;
    write_run(path, entries.len(), || entries.iter().copied())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meldnet_proto::v1 as pb;
    use std::sync::Mutex;

    /// A store of keys records, all durable.
    #[derive(Default)]
    struct Records(Mutex<Vec<pb::CaseKeysRecord>>);

    impl CaseSource for Records {
        fn case_record(&self, _: &CaseId) -> Result<Option<pb::CaseRecord>, CaseError> {
            Ok(None)
        }
        fn case_of_key(&self, _: &super::super::ExactKey) -> Result<Option<CaseId>, CaseError> {
            Ok(None)
        }
        fn case_keys_since(
            &self,
            after: u64,
            f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<bool, CaseError>,
        ) -> Result<(), CaseError> {
            let all = self.0.lock().unwrap().clone();
            for r in all.into_iter().filter(|r| r.seq > after) {
                if !f(r)? {
                    break;
                }
            }
            Ok(())
        }
        fn applied_placement(&self) -> u64 {
            u64::MAX
        }
        fn durable_placement(&self) -> u64 {
            u64::MAX
        }
        fn durable_keys_seq(&self) -> u64 {
            self.0.lock().unwrap().last().map_or(0, |r| r.seq)
        }
    }

    fn hash(seed: u64) -> PdqHash {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        PdqHash(b)
    }

    fn near(h: PdqHash, bits: usize) -> PdqHash {
        let mut n = h;
        for b in 0..bits {
            n.0[(b * 7) % 32] ^= 1 << (b % 8);
        }
        n
    }

    /// Stores a keys record of `case` with `hashes` and adds them as a
    /// placement would.
    fn place(src: &Records, runs: &mut PdqRuns, case: CaseId, hashes: &[PdqHash]) {
        let mut recs = src.0.lock().unwrap();
        let seq = recs.len() as u64 + 1;
        recs.push(pb::CaseKeysRecord {
            case_id: case.as_bytes().to_vec(),
            pdqs: hashes.iter().map(|h| h.0.to_vec()).collect(),
            pdq_qualities: vec![90; hashes.len()],
            seq,
            ..Default::default()
        });
        drop(recs);
        for h in hashes {
            runs.add(*h, case, 90, seq);
        }
    }

    /// What the thread that makes runs does: runs of the frozen tables,
    /// then merges.
    fn make_waiting_runs(src: &Records, runs: &mut PdqRuns) {
        while runs.waiting().is_some() {
            let (path, after, name) = runs.plan().unwrap();
            let upto = src.durable_keys_seq();
            make_frozen_run(src, &path, (after, upto), 0).unwrap();
            runs.install(&path, name, after, upto).unwrap();
            while let Some((pair, path, name)) = runs.plan_merge() {
                merge_pair(&pair, &path).unwrap();
                runs.install_merge(&pair, &path, name).unwrap();
            }
        }
    }

    #[test]
    fn runs_on_disk_answer_as_memory_does_and_survive_a_reopen_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let src = Records::default();
        let mut runs = PdqRuns::open(dir.path(), 500).unwrap();
        let mut memory = PdqRuns::in_memory();
        let cases: Vec<CaseId> = (0..400).map(|_| CaseId::new_v7()).collect();
        for (i, c) in cases.iter().enumerate() {
            let hs = [
                hash(3 * i as u64),
                hash(3 * i as u64 + 1),
                hash(3 * i as u64 + 2),
            ];
            place(&src, &mut runs, *c, &hs);
            for h in hs {
                memory.add(h, *c, 90, 0);
            }
            make_waiting_runs(&src, &mut runs);
        }
        // Made and merged: fewer runs than were made.
        assert!(
            (1..=3).contains(&runs.run_count()),
            "{} runs",
            runs.run_count()
        );
        let queries: Vec<PdqHash> = (0..1200u64)
            .map(|i| near(hash(i), (i % 40) as usize))
            .chain((5000..5100u64).map(hash))
            .collect();
        let want: Vec<_> = queries.iter().map(|q| memory.best(q)).collect();
        assert_eq!(
            queries.iter().map(|q| runs.best(q)).collect::<Vec<_>>(),
            want
        );
        assert_eq!(runs.best_many(&queries), want);
        assert!(want.iter().filter(|w| w.is_some()).count() > 500);
        // Reopened: the runs, and the records after them, caught up.
        drop(runs);
        let mut again = PdqRuns::open(dir.path(), 500).unwrap();
        again.catch_up(&src).unwrap();
        assert_eq!(again.len(), 1200);
        assert_eq!(again.best_many(&queries), want);
        // A flipped byte in a run: set aside, made again from the store.
        drop(again);
        let run = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".run"))
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&run).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x08;
        std::fs::write(&run, &bytes).unwrap();
        let mut mended = PdqRuns::open(dir.path(), 500).unwrap();
        mended.catch_up(&src).unwrap();
        assert_eq!(mended.best_many(&queries), want);
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .count();
        assert_eq!(aside, 1);
    }

    #[test]
    fn between_cases_at_one_distance_the_older_wins() {
        let mut runs = PdqRuns::in_memory();
        let (old, new) = (CaseId::new_v7(), CaseId::new_v7());
        let h = hash(7);
        runs.add(h, new, 90, 1);
        runs.add(h, old, 90, 2);
        runs.add(near(h, 3), CaseId::new_v7(), 90, 3);
        assert_eq!(runs.best(&h), Some((0, old)));
        assert_eq!(runs.best_many(&[h]), vec![Some((0, old))]);
        // Too poor to match: never added.
        runs.add(hash(8), new, 10, 4);
        assert_eq!(runs.best(&hash(8)), None);
    }
}
