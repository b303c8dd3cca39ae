//! Connections to a PostgreSQL pool: the parsed URL (password from the URL,
//! `PGPASSWORD` or the password file, as libpq users expect), one connection
//! with its prepared statements, the error mapping, and the fork rule.
//!
//! The client is `tokio-postgres` (the `postgres` crate's core), driven as the
//! `postgres` crate drives it — each connection on a current-thread Tokio
//! runtime of its own, inside the calling thread, so it starts no thread —
//! but by this module, so that [`Db::notifications`] can take what the server
//! pushed without waiting (the `postgres` crate's non-blocking iterator never
//! lets the runtime look at the socket: it sees a notification only after the
//! next query). The one way a thread could start (a host *name* resolved by
//! Tokio's blocking pool) is closed here: names are resolved synchronously on
//! the calling thread, as libpq does, and handed over as addresses.

use crate::error::Error;
use cryptoki_sys::{CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY};
use postgres::types::ToSql;
use postgres::{Row, SimpleQueryMessage, Statement};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::task::Poll;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Notification, Socket};

/// How long a connection attempt to one host may take before the next host
/// of a multi-host URL is tried (unless the URL says `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a writer waits for another process's write lock before giving up
/// (`CKR_DEVICE_ERROR`), as the SQLite store's busy timeout: a login under
/// contention runs PBKDF2 while holding the lock.
const LOCK_TIMEOUT: &str = "30s";

/// A failure inside the store: the database's (logged with the server's name
/// where it surfaces) or a refusal already carried as a `CK_RV`.
pub(super) enum Fail {
    /// The database or the connection failed.
    Db(postgres::Error),
    /// A rule refused the operation.
    Rv(Error),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Rv(e)
    }
}

/// Where a pool's database is: the parsed URL and how to name it in messages.
pub(super) struct Target {
    config: Config,
    /// The URL without its password, for messages.
    pub shown: String,
}

impl Target {
    /// Parse a libpq URL or keyword/value string; a password absent from it
    /// comes from `PGPASSWORD`, else the password file (`PGPASSFILE` or
    /// `~/.pgpass`). A malformed URL is `CKR_DEVICE_ERROR`, logged without
    /// its password.
    pub fn parse(url: &str) -> Result<Target, Error> {
        let shown = redacted(url);
        let mut config: Config = url.parse().map_err(|e| {
            let msg = format!("token store {shown}: bad PostgreSQL URL: {e}");
            log::error!("{msg}");
            super::remember(msg);
            Error(CKR_DEVICE_ERROR)
        })?;
        if config.get_password().is_none() {
            if let Some(pw) = password_from_environment(&config) {
                config.password(pw);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A server that vanished without closing the socket (a failed-over
        // primary) is noticed within about a minute even by an idle process.
        config.keepalives_idle(Duration::from_secs(30));
        Ok(Target { config, shown })
    }

    /// Open a connection on `runtime`, names resolved on this thread (see the
    /// module doc). Its `application_name` is `softmhsm <pid>`, so an
    /// administrator (and a test) sees which process holds which session.
    fn connect(
        &self,
        runtime: &Runtime,
    ) -> Result<(Client, Connection<Socket, NoTlsStream>), postgres::Error> {
        let mut config = self.config.clone();
        config.application_name(format!("softmhsm {}", std::process::id()));
        if config.get_hostaddrs().is_empty() {
            let port = |i: usize| {
                let ports = config.get_ports();
                ports.get(i).or(ports.first()).copied().unwrap_or(5432)
            };
            let resolved: Option<Vec<_>> = config
                .get_hosts()
                .iter()
                .enumerate()
                .map(|(i, h)| match h {
                    Host::Tcp(name) => (name.as_str(), port(i))
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .map(|a| a.ip()),
                    Host::Unix(_) => None,
                })
                .collect();
            // All or nothing: the client wants one address per host. A socket
            // directory or an unknown name leaves it to the client, which then
            // reports the name it could not reach.
            if let Some(addrs) = resolved {
                for a in addrs {
                    config.hostaddr(a);
                }
            }
        }
        runtime.block_on(config.connect(NoTls))
    }

    /// The one line logged when the database fails: the server and the cause;
    /// the `CK_RV` it becomes (`CKR_DEVICE_MEMORY` when the server is out of
    /// disk or memory, else `CKR_DEVICE_ERROR`).
    pub fn report(&self, fail: Fail) -> Error {
        match fail {
            Fail::Rv(e) => e,
            Fail::Db(e) => {
                let msg = format!("token store {}: {}", self.shown, cause(&e));
                log::error!("{msg}");
                super::remember(msg);
                match e.code().map(|c| c.code()) {
                    Some("53100" | "53200") => Error(CKR_DEVICE_MEMORY),
                    _ => Error(CKR_DEVICE_ERROR),
                }
            }
        }
    }
}

/// What went wrong, in one line: the server's message and SQLSTATE for an
/// error the server sent (the client's own text says only "db error"), else
/// the client's text and its causes ("error connecting to server" alone does
/// not say "Connection refused").
pub(super) fn cause(e: &postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        return format!("{} {}: {}", d.severity(), d.code().code(), d.message());
    }
    let mut line = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        line.push_str(&format!(": {s}"));
        source = s.source();
    }
    line
}

/// One open connection and its prepared statements (the hot statements are
/// parsed once per connection, as the SQLite store caches them).
pub(super) struct Db {
    runtime: Runtime,
    client: Client,
    connection: Connection<Socket, NoTlsStream>,
    /// Notifications the connection received, not yet taken.
    notes: VecDeque<Notification>,
    /// The server ended the connection (or it failed).
    ended: bool,
    cache: HashMap<String, Statement>,
    /// The connection's socket (descriptor, inode), when it could be told
    /// apart from the others at connect time: a forked child closes its copy.
    socket: Option<(i32, u64)>,
}

impl Drop for Db {
    fn drop(&mut self) {
        // The connection closes its socket; a later child has none to close.
        if let Some((fd, _)) = self.socket {
            crate::ffi::fork::keep_in_children(fd);
        }
    }
}

/// This process's open sockets, (descriptor, inode), from /proc/self/fd
/// (empty where there is none: a child then keeps its copies).
fn sockets() -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd = e.file_name().to_str()?.parse().ok()?;
        let link = std::fs::read_link(e.path()).ok()?;
        let inode = link
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        Some((fd, inode))
    })
    .collect()
}

impl Db {
    /// Connect, with this store's session settings. `CKR_DEVICE_MEMORY` when
    /// the runtime cannot be made (out of file descriptors or memory).
    pub fn open(target: &Target) -> Result<Db, Fail> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                log::error!("token store {}: {e}", target.shown);
                Fail::Rv(Error(CKR_DEVICE_MEMORY))
            })?;
        let before = sockets();
        let (client, connection) = target.connect(&runtime)?;
        // The one socket the connection opened; another thread opening one
        // meanwhile makes it ambiguous, and then a child keeps its copy.
        let new: Vec<_> = sockets()
            .into_iter()
            .filter(|s| !before.contains(s))
            .collect();
        let socket = match new[..] {
            [(fd, inode)] => {
                crate::ffi::fork::close_in_children(fd, inode);
                Some((fd, inode))
            }
            _ => None,
        };
        let mut db = Db {
            runtime,
            client,
            connection,
            notes: VecDeque::new(),
            ended: false,
            cache: HashMap::new(),
            socket,
        };
        db.batch(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))?;
        Ok(db)
    }

    /// Whether the connection is known to be gone.
    pub fn is_closed(&self) -> bool {
        self.ended || self.client.is_closed()
    }

    /// Run the request `f` makes of the client to its end, the connection
    /// driven meanwhile (its notifications kept for [`Db::notifications`]).
    fn run<'a, T, F>(&'a mut self, f: impl FnOnce(&'a Client) -> F) -> Result<T, postgres::Error>
    where
        F: Future<Output = Result<T, postgres::Error>> + 'a,
    {
        let Db {
            runtime,
            client,
            connection,
            notes,
            ended,
            ..
        } = self;
        let mut request = std::pin::pin!(f(client));
        runtime.block_on(std::future::poll_fn(|cx| {
            // Everything the connection can do now: send the request, read
            // the answer, keep what else the server sent.
            while !*ended {
                match connection.poll_message(cx) {
                    Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => notes.push_back(n),
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => {
                        *ended = true;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(None) => *ended = true,
                    Poll::Pending => break,
                }
            }
            request.as_mut().poll(cx)
        }))
    }

    /// The notifications received so far, without waiting for more: the
    /// runtime looks at the socket once (one `epoll_wait` that returns at
    /// once, a `recv` if there is something) — no round trip to the server.
    pub fn notifications(&mut self) -> Result<Vec<Notification>, postgres::Error> {
        // A yield makes the runtime poll its I/O driver before polling again.
        self.run(|_| async {
            tokio::task::yield_now().await;
            Ok(())
        })?;
        Ok(self.notes.drain(..).collect())
    }

    fn prepared(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.run(|c| c.prepare(sql))?;
        self.cache.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Run statements without parameters (`BEGIN`, `COMMIT`, DDL).
    pub fn batch(&mut self, sql: &str) -> Result<(), Fail> {
        Ok(self.run(|c| c.batch_execute(sql))?)
    }

    /// Run several statements in one round trip (simple protocol: no
    /// parameters, so only SQL this module writes, with numbers formatted in);
    /// the last row any of them returned, as text.
    pub fn last_row(&mut self, sql: &str) -> Result<Vec<Option<String>>, Fail> {
        let row = self
            .run(|c| c.simple_query(sql))?
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .next_back()
            .ok_or(Fail::Rv(Error(CKR_DEVICE_ERROR)))?;
        Ok((0..row.len())
            .map(|i| row.get(i).map(str::to_string))
            .collect())
    }

    /// Every row of a query.
    pub fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Fail> {
        let s = self.prepared(sql)?;
        Ok(self.run(|c| c.query(&s, params))?)
    }

    /// The one row of a query.
    pub fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Fail> {
        let s = self.prepared(sql)?;
        Ok(self.run(|c| c.query_one(&s, params))?)
    }

    /// The row of a query, if any.
    pub fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Fail> {
        let s = self.prepared(sql)?;
        Ok(self.run(|c| c.query_opt(&s, params))?)
    }

    /// Run a statement; the number of rows it touched.
    pub fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Fail> {
        let s = self.prepared(sql)?;
        Ok(self.run(|c| c.execute(&s, params))?)
    }
}

/// What a new connection does before its first use (the pool's store:
/// LISTEN, and on the first the schema check; see [`super::postgres`]).
pub(super) type Setup = Box<dyn FnMut(&mut Db) -> Result<(), Fail> + Send>;

/// A connection owned by one process, opened at its first use. `fork()`
/// copies it into the child, socket and all; closing it there would send the
/// server a Terminate on the parent's session and kill it. So the child never
/// uses it and, when it drops it (re-running `C_Initialize`), leaks it instead
/// of closing it.
pub(super) struct Owned {
    db: Option<Db>,
    pid: u32,
    setup: Option<Setup>,
}

impl Owned {
    /// Hold `db` (None: open one at the first [`Owned::get`]) for this
    /// process; every connection it opens runs `setup` first.
    pub fn new(db: Option<Db>, setup: Option<Setup>) -> Owned {
        Owned {
            db,
            pid: std::process::id(),
            setup,
        }
    }

    /// A connection that is not known to be broken, opened if there is none
    /// yet or anew if needed (a server restart, a failover: reconnection is
    /// automatic). A new connection runs the setup before it is used.
    pub fn get(&mut self, target: &Target) -> Result<&mut Db, Fail> {
        if self.pid != std::process::id() {
            // Never reached through the library (a child re-initialises), but
            // a connection inherited across fork() is never used.
            std::mem::forget(self.db.take());
            self.pid = std::process::id();
        }
        if self.db.as_ref().is_some_and(Db::is_closed) {
            self.db = None;
        }
        if self.db.is_none() {
            let mut db = Db::open(target)?;
            if let Some(setup) = &mut self.setup {
                setup(&mut db)?;
            }
            self.db = Some(db);
        }
        self.db.as_mut().ok_or(Fail::Rv(Error(CKR_DEVICE_ERROR)))
    }

    /// This process's open connection, if it has one (never opens one).
    pub fn current(&mut self) -> Option<&mut Db> {
        if self.pid != std::process::id() {
            return None;
        }
        self.db.as_mut().filter(|db| !db.is_closed())
    }

    /// Forget a connection that broke, so the next call opens a new one.
    pub fn discard(&mut self) {
        let db = self.db.take();
        if self.pid != std::process::id() {
            std::mem::forget(db);
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            std::mem::forget(self.db.take());
        }
    }
}

/// `url` with any password replaced by `***` (URL userinfo, `password=`
/// parameters and keyword/value pairs).
pub fn redacted(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        let scheme_len = url.len() - rest.len();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out = format!(
                    "{}{}:***{}",
                    &url[..scheme_len],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
    }
    // `password=…` as a query parameter or a keyword/value pair.
    let mut shown = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let boundary = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        shown.push_str(&rest[..i + "password=".len()]);
        rest = &rest[i + "password=".len()..];
        if boundary {
            shown.push_str("***");
            let end = rest.find(['&', ' ']).unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    shown.push_str(rest);
    shown
}

/// The password libpq would use when the URL has none: `PGPASSWORD`, else the
/// first matching line of the password file (`PGPASSFILE`, else
/// `~/.pgpass`), which is ignored when group or others may read it.
fn password_from_environment(config: &Config) -> Option<String> {
    if let Some(pw) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
        return pw.into_string().ok();
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let meta = std::fs::metadata(&file).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "password file {} has group or world access; it is ignored (chmod 0600)",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let user = config.get_user().map(str::to_string).or_else(|| {
        std::env::var("USER")
            .ok()
            .or_else(|| std::env::var("LOGNAME").ok())
    })?;
    let db = config.get_dbname().unwrap_or(&user).to_string();
    let ports = config.get_ports();
    let candidates: Vec<(String, String)> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(_) => "localhost".to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            (host, port.to_string())
        })
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(pgpass_fields)
        .find(|f| {
            let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            candidates
                .iter()
                .any(|(h, p)| matches(&f[0], h) && matches(&f[1], p))
                && matches(&f[2], &db)
                && matches(&f[3], &user)
        })
        .map(|f| f[4].clone())
}

/// The five fields of a password-file line (`\:` and `\\` unescaped).
fn pgpass_fields(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next()?),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted("postgresql://app:s3cret@db1,db2/pool?target_session_attrs=read-write"),
            "postgresql://app:***@db1,db2/pool?target_session_attrs=read-write"
        );
        assert_eq!(
            redacted("postgres://h/db?user=a&password=s3cret&x=1"),
            "postgres://h/db?user=a&password=***&x=1"
        );
        assert_eq!(
            redacted("host=h password=s3cret dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(redacted("postgresql://app@h/db"), "postgresql://app@h/db");
    }

    #[test]
    fn password_file_lines_unescape_colons() {
        let f = pgpass_fields(r"db\:1:5432:*:app:pa\:ss").unwrap();
        assert_eq!(f[0], "db:1");
        assert_eq!(f[4], "pa:ss");
        assert!(pgpass_fields("too:few").is_none());
    }
}
