//! A real PostgreSQL cluster for the tests, never a mock: `initdb` in a
//! temporary folder and `pg_ctl start` on a free loopback port. PostgreSQL
//! refuses to run as root, so when the tests run as root (as CI does) the
//! cluster runs as an unprivileged user: `postgres` (made by Debian's
//! package), else `nobody`, through `runuser`. The binaries come from
//! `MELDNET_PG_BIN`, else the `PATH`, else `/usr/lib/postgresql/<version>/bin`.
//! The cluster is stopped (immediately) and its folder removed when dropped.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The folder holding `initdb` and `pg_ctl`.
pub fn pg_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("MELDNET_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("PostgreSQL is not installed (apt-get install postgresql); set MELDNET_PG_BIN to its bin folder")
}

/// Who the cluster runs as: `None` is this process's user (not root).
fn cluster_user() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return None;
    }
    let exists = |name: &str| {
        Command::new("id")
            .arg("-u")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    Some(
        if exists("postgres") {
            "postgres"
        } else {
            "nobody"
        }
        .to_string(),
    )
}

/// A running cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<String>,
    /// Its loopback port.
    pub port: u16,
}

impl PgCluster {
    /// A new cluster with a superuser `meldnet` (trust over loopback),
    /// started and ready for connections.
    pub fn start() -> Result<PgCluster> {
        let bin = pg_bin()?;
        let user = cluster_user();
        let dir = tempfile::Builder::new().prefix("meldnet-pg-").tempdir()?;
        if let Some(u) = &user {
            let uid = id_of(u, "-u")?;
            let gid = id_of(u, "-g")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let c = PgCluster {
            dir,
            bin,
            user,
            port: free_port(),
        };
        let data = c.data();
        let o = c.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "meldnet",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        if !o.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        c.pg_ctl_start()?;
        Ok(c)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a PostgreSQL program as the cluster's user.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .with_context(|| format!("running {}", exe.display()))
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let data = self.data();
        let log = self.dir.path().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            path_str(self.dir.path())?
        );
        let o = self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        if !o.status.success() {
            bail!(
                "pg_ctl start failed: {}{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                self.log()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL does not listen on {}: {}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A libpq-style connection string for the superuser over loopback TCP.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=meldnet dbname={dbname}",
            self.port
        )
    }

    /// The postmaster's process id (first line of `postmaster.pid`).
    pub fn pid(&self) -> Result<i32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .context("postmaster.pid: the cluster is not running")?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid: no process id")
    }

    /// SIGKILLs the postmaster (its children end with it): a crash, not a
    /// shutdown.
    pub fn kill(&self) -> Result<()> {
        let pid = self.pid()?;
        // SAFETY: kill with a pid read from the cluster's own pid file.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            bail!("kill {pid}: {}", std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // SAFETY: signal 0 only asks whether the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            if Instant::now() > deadline {
                bail!("postmaster {pid} still runs after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The backends the postmaster leaves behind end when they notice.
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    }

    /// Starts the cluster again (after `kill`): it recovers from its WAL.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_start()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data()) {
            let _ = self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn id_of(user: &str, flag: &str) -> Result<u32> {
    let o = Command::new("id").arg(flag).arg(user).output()?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .with_context(|| format!("id {flag} {user}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
