//! Throwaway PostgreSQL clusters for tests (DESIGN §10: real servers, not
//! mocks). `initdb` in a temp dir, as an unprivileged user (PostgreSQL refuses
//! to run as root: as root, the user `softmhsm-pg` is created if missing), a
//! server on a free loopback port with its socket in the temp dir and trust
//! authentication, stopped and removed on drop.
//!
//! When PostgreSQL is not installed or will not start, a test that needs it
//! prints `SKIPPED` and returns, unless `SOFTMHSM_REQUIRE_TOOLS` is set (CI
//! sets it): then it fails, naming the cause.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The unprivileged user that runs clusters when the tests run as root.
const PG_USER: &str = "softmhsm-pg";

/// A running throwaway cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `Some(user)` when commands run as that user (the tests run as root).
    run_as: Option<String>,
    /// The server's options (port, socket directory, …), for a start after a stop.
    opts: String,
}

impl Cluster {
    /// Start a cluster, or None (after printing why) when PostgreSQL is not
    /// available and not required.
    pub fn start() -> Option<Cluster> {
        Cluster::required(Cluster::try_start())
    }

    fn try_start() -> Result<Cluster, String> {
        let cluster = Cluster::empty()?;
        cluster.initdb()?;
        cluster.launch()
    }

    /// The cluster, or None (after printing why) when it is not required.
    fn required(started: Result<Cluster, String>) -> Option<Cluster> {
        match started {
            Ok(c) => Some(c),
            Err(why) => {
                let required = std::env::var("SOFTMHSM_REQUIRE_TOOLS")
                    .is_ok_and(|v| !v.is_empty() && v != "0");
                assert!(
                    !required,
                    "PostgreSQL is needed and SOFTMHSM_REQUIRE_TOOLS is set, but no cluster \
                     could be started: {why} (apt-get install postgresql)"
                );
                println!("SKIPPED: no PostgreSQL cluster: {why} (apt-get install postgresql)");
                None
            }
        }
    }

    /// A cluster with a temp dir (owned by the cluster's user) and no data yet.
    fn empty() -> Result<Cluster, String> {
        let bin = bindir().ok_or("no initdb found (/usr/lib/postgresql/*/bin)")?;
        let root = std::fs::metadata("/proc/self")
            .map_err(|e| e.to_string())?
            .uid()
            == 0;
        let run_as = if root {
            ensure_user()?;
            Some(PG_USER.to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("softmhsm-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let cluster = Cluster {
            dir,
            bin,
            port: 0,
            run_as,
            opts: String::new(),
        };
        if let Some(user) = &cluster.run_as {
            let (uid, gid) = ids(user)?;
            std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
        Ok(cluster)
    }

    /// Create the data directory.
    fn initdb(&self) -> Result<(), String> {
        let data = self.dir.join("data");
        self.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )
    }

    /// Append settings to the data directory's `postgresql.conf`.
    fn configure(&self, settings: &str) -> Result<(), String> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("data/postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(|e| format!("postgresql.conf: {e}"))
    }

    /// Start the server on a free loopback port (three tries: another process
    /// may take the port first).
    fn launch(mut self) -> Result<Cluster, String> {
        let mut last = String::new();
        for _ in 0..3 {
            self.port = free_port()?;
            self.opts = format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} \
                 -c fsync=off -c max_connections=300",
                self.port,
                self.dir.display()
            );
            match self.start_server() {
                Ok(()) => return Ok(self),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Run one of the cluster's programs as its user; Err with its output.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The URL of database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("db{}", N.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        self.url(&name)
    }

    /// A new, empty schema in the shared test database; the URL that makes it
    /// the connection's schema (a pool per schema: much cheaper than a database).
    pub fn schema(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        static DB: OnceLock<String> = OnceLock::new();
        let db = DB.get_or_init(|| self.database());
        let name = format!("t{}", N.fetch_add(1, Ordering::Relaxed));
        let mut admin =
            postgres::Client::connect(db, postgres::NoTls).expect("connect to the test database");
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .expect("create a test schema");
        format!("{db}?options=-csearch_path%3D{name}")
    }

    /// Restart the server (fast shutdown: every session is cut, as in a
    /// server restart under running clients).
    pub fn restart(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                // The new server's output goes to the log, not to our pipe.
                "-l",
                &self.dir.join("log").to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "restart",
            ],
        )
        .expect("restart the test cluster");
    }

    /// Start the server of this cluster's data directory.
    fn start_server(&self) -> Result<(), String> {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "-o",
                &self.opts,
                "start",
            ],
        )
    }

    /// Stop the server (fast: sessions are cut), run `f` while it is down,
    /// start it again.
    pub fn while_down(&self, f: impl FnOnce()) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
        )
        .expect("stop the test cluster");
        f();
        self.start_server().expect("start the test cluster again");
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stop and remove this cluster when this process exits, however it exits
    /// (a shared cluster lives in a static, which is never dropped): a small
    /// shell waits for the process to be gone.
    fn reap_at_exit(&self) {
        let data = self.dir.join("data");
        let pg_ctl = self.bin.join("pg_ctl");
        let as_user = match &self.run_as {
            Some(u) => format!("runuser -u {u} -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {as_user}'{pg_ctl}' -D '{data}' -m immediate stop; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = data.display(),
            dir = self.dir.display(),
        );
        let spawned = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            println!(
                "cannot reap the test cluster at {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Replication, for tests/pg_failover.rs (the store suite does not fail over).
#[allow(dead_code)]
impl Cluster {
    /// Start a primary whose commits wait for a synchronous standby
    /// (`synchronous_commit = on`, any standby may be the synchronous one):
    /// a commit returns only once a standby has the WAL. No commit returns
    /// until [`Cluster::standby`] has started one.
    pub fn start_primary() -> Option<Cluster> {
        let started = (|| {
            let cluster = Cluster::empty()?;
            cluster.initdb()?;
            cluster.configure(
                "wal_level = replica\n\
                 synchronous_commit = on\n\
                 synchronous_standby_names = '*'\n",
            )?;
            cluster.launch()
        })();
        Cluster::required(started)
    }

    /// A streaming standby of this primary (`pg_basebackup -R`), started,
    /// and confirmed as the primary's synchronous standby. Once promoted it is
    /// a primary of its own, which waits for no standby.
    pub fn standby(&self) -> Cluster {
        let started = (|| {
            let standby = Cluster::empty()?;
            standby.run(
                "pg_basebackup",
                &[
                    "-D",
                    &standby.dir.join("data").to_string_lossy(),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                ],
            )?;
            standby.configure("synchronous_standby_names = ''\n")?;
            standby.launch()
        })();
        let standby = started.expect("start a streaming standby");
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connect to the primary");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let sync = admin
                .query(
                    "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
                    &[],
                )
                .expect("ask the primary for its standbys");
            if !sync.is_empty() {
                return standby;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the standby did not become synchronous within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Stop the server at once, as a crash would (`-m immediate`: no
    /// shutdown checkpoint, sessions cut).
    pub fn crash(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .expect("stop the cluster");
    }

    /// Promote this standby to a primary; returns once it accepts writes.
    pub fn promote(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-w", "-t", "60", "promote"],
        )
        .expect("promote the standby");
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The backend pids of the sessions that process `pid` holds in the database
/// of `url` (softmhsm names its sessions `softmhsm <pid>`), sorted.
pub fn sessions_of(url: &str, pid: u32) -> Vec<i32> {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("connect as admin");
    let mut pids: Vec<i32> = admin
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&format!("softmhsm {pid}")],
        )
        .expect("list sessions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    pids.sort_unstable();
    pids
}

/// The cluster shared by this test process (started once, reaped at exit),
/// or None when PostgreSQL is unavailable and not required.
pub fn shared() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let c = Cluster::start()?;
            c.reap_at_exit();
            Some(c)
        })
        .as_ref()
}

/// The directory of `initdb`: the newest `/usr/lib/postgresql/*/bin`, else `$PATH`.
fn bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?).find(|d| d.join("initdb").exists())
    })
}

/// Create the unprivileged cluster user if missing (as root).
fn ensure_user() -> Result<(), String> {
    if ids(PG_USER).is_ok() {
        return Ok(());
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_USER,
        ])
        .output()
        .map_err(|e| format!("useradd: {e}"))?;
    // Another test process may have created it meanwhile.
    if out.status.success() || ids(PG_USER).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "useradd {PG_USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The uid and gid of `user`.
fn ids(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("no user {user}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// A loopback port free now (the server may still lose a race for it: the
/// caller retries).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}
