//! Percentiles and process figures.

/// The `p`-th percentile (0-100) of `v` by nearest rank; 0 when empty.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied().unwrap_or(0.0)
}

/// Resident memory now (VmRSS) of a process, in MiB, from /proc.
pub fn rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// Peak resident memory (VmHWM) of a process, in MiB, from /proc.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmHWM:")
}

/// Watches a process's resident memory in a thread of its own (every
/// 100 ms) and keeps the peaks of its two parts: anonymous memory (the
/// heap: what the process needs) and mapped files (pages of files it maps,
/// which the kernel drops and reads again as it needs the room: a cache).
pub struct MemoryWatch {
    peaks: std::sync::Arc<std::sync::Mutex<(f64, f64)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryWatch {
    /// Starts watching `pid`.
    pub fn start(pid: u32) -> MemoryWatch {
        let peaks = std::sync::Arc::new(std::sync::Mutex::new((0.0f64, 0.0f64)));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peaks.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let (Some(a), Some(f)) = (status_mb(pid, "RssAnon:"), status_mb(pid, "RssFile:"))
                {
                    if let Ok(mut g) = p.lock() {
                        g.0 = g.0.max(a);
                        g.1 = g.1.max(f);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        MemoryWatch { peaks, stop }
    }

    /// The peaks so far: (anonymous MiB, mapped files MiB).
    pub fn peaks(&self) -> (f64, f64) {
        self.peaks.lock().map(|g| *g).unwrap_or((0.0, 0.0))
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds (user and system) a process has used so far, from /proc.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks / hz.max(1) as f64)
}

/// CPU seconds (user and system) this process has used so far.
pub fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id()).unwrap_or(0.0)
}

/// Microseconds since the Unix epoch: the clock all bench processes share.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut v, 100.0), 100.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }

    #[test]
    fn a_busy_loop_shows_in_the_cpu_time() {
        let before = own_cpu_secs();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(own_cpu_secs() - before >= 0.1);
    }
}
