//! Real faults for the fault tests: a filesystem that fills up (a tmpfs of a
//! set size, mounted for the test), and failing `write`s or `fsync`s (a
//! preload shim, `tests/faults/failing_io.c`, compiled here with the
//! machine's C compiler and switched on and off while the process runs).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size mounted for one test, unmounted when dropped.
/// Filling it gives every writer in it a real `ENOSPC`.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts `size_mib` MiB at `path` (created). Needs the right to mount
    /// (CI runs as root, as it installs packages).
    pub fn mount(path: &Path, size_mib: u64) -> Result<SmallDisk> {
        std::fs::create_dir_all(path)?;
        let o = crate::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_mib}m,mode=0755"))
                .arg("meldnet-test")
                .arg(path),
        );
        if !o.status.success() {
            bail!(
                "mount -t tmpfs at {} failed (the fault tests need the right to mount): {}",
                path.display(),
                crate::stderr(&o)
            );
        }
        Ok(SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the disk with one file (returned) until only `leave` bytes are
    /// free; with 0, every write after this fails with `ENOSPC` until the
    /// file is removed.
    pub fn fill(&self, leave: u64) -> Result<PathBuf> {
        let p = self.path.join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)?;
        let chunk = vec![0x5au8; 64 * 1024];
        // Big pieces, then a page at a time, then a byte at a time.
        for n in [chunk.len(), 4096, 1] {
            while self.free() >= leave + n as u64 {
                match f.write(&chunk[..n]) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => return Err(e).context("filling the small disk"),
                }
            }
        }
        f.sync_all()?;
        Ok(p)
    }

    /// Bytes free now.
    pub fn free(&self) -> u64 {
        free_bytes(&self.path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Free bytes on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

/// The failing-I/O shim, compiled into `dir`, and its switch.
pub struct FaultShim {
    lib: PathBuf,
    switch: PathBuf,
    target: PathBuf,
}

impl FaultShim {
    /// Compiles the shim into `dir`; it will act on the files under
    /// `target` whose path (below it) starts with `prefix` (all with "").
    pub fn build(dir: &Path, target: &Path, prefix: &str) -> Result<FaultShim> {
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all(target)?;
        let src = dir.join("failing_io.c");
        std::fs::write(&src, include_str!("../faults/failing_io.c"))?;
        let lib = dir.join("libfailing_io.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let o = crate::run(
            Command::new(&cc)
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
                .arg(&lib)
                .arg(&src)
                .arg("-ldl"),
        );
        if !o.status.success() {
            bail!("{cc} failing_io.c: {}", crate::stderr(&o));
        }
        Ok(FaultShim {
            lib,
            switch: dir.join("fault-switch"),
            // The shim compares with the path the kernel reports.
            target: target.canonicalize()?.join(prefix),
        })
    }

    /// The environment that loads it into a process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.lib.display().to_string()),
            (
                "MELDNET_FAULT_DIR".into(),
                self.target.display().to_string(),
            ),
            (
                "MELDNET_FAULT_SWITCH".into(),
                self.switch.display().to_string(),
            ),
        ]
    }

    /// From now on these calls fail on the target's files: `fsync`
    /// (fsync, fdatasync, sync_file_range: EIO), `write` (EIO), `enospc`.
    pub fn fail(&self, what: &str) -> Result<()> {
        std::fs::write(&self.switch, what)?;
        Ok(())
    }

    /// From now on nothing fails.
    pub fn heal(&self) -> Result<()> {
        match std::fs::remove_file(&self.switch) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// A TCP proxy that cuts connections mid-stream: each connection is closed
/// in both directions after a number of bytes drawn from a seeded range, as
/// a flaky network or a load balancer's reset would. Runs until dropped.
pub struct CutProxy {
    /// Where clients connect instead of the upstream.
    pub addr: std::net::SocketAddr,
    cuts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CutProxy {
    /// Listens on loopback and forwards to `upstream`, cutting each
    /// connection after `lo..=hi` bytes (both directions counted).
    pub fn start(upstream: std::net::SocketAddr, seed: u64, lo: u64, hi: u64) -> Result<CutProxy> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let cuts = Arc::new(AtomicU64::new(0));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let counter = cuts.clone();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let mut rng = crate::crash::Rng::new(seed);
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = &mut stop_rx => return,
                    };
                    let Ok((client, _)) = accepted else { continue };
                    let budget = rng.range(lo, hi);
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        if forward_until(client, server, budget).await {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
            });
        });
        Ok(CutProxy {
            addr,
            cuts,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies both ways until either side closes or `budget` bytes have passed;
/// true if it was cut. Both sockets are dropped (closed) on return.
async fn forward_until(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    budget: u64,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut left = budget;
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        // Whichever side has bytes first; a cut may fall inside a record.
        let (n, to_server) = tokio::select! {
            r = cr.read(&mut a) => (r.unwrap_or(0), true),
            r = sr.read(&mut b) => (r.unwrap_or(0), false),
        };
        if n == 0 {
            return false;
        }
        let take = (n as u64).min(left) as usize;
        let sent = if to_server {
            sw.write_all(&a[..take]).await
        } else {
            cw.write_all(&b[..take]).await
        };
        left -= take as u64;
        if sent.is_err() {
            return false;
        }
        if left == 0 {
            return true;
        }
    }
}
