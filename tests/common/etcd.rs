//! A real three-member etcd cluster on loopback for the cluster tests:
//! Debian's `etcd` binary (3.4), or the one `LOCKD_ETCD_BIN` names (e.g. a
//! 3.5 build), each member in a fresh temp dir, every member stopped by PID
//! on drop.
//!
//! etcd binds its client and peer ports itself, so port 0 cannot be used
//! (the members must know each other's peer ports before they start).
//! Ports come from a range of this test process (its PID picks it), each
//! start takes the next unused block, and a start that fails (a port was
//! taken meanwhile) is retried on the next block.

use super::{TempDir, TestServer};
use lockd::store::etcd::EtcdConfig;
use lockd::ServerConfig;
use parking_lot::Mutex;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Members of every cluster the tests start.
pub const MEMBERS: usize = 3;

/// Ports one member uses: client and peer.
const PORTS_PER_MEMBER: u16 = 2;

/// Blocks of ports a test process may go through.
const BLOCKS_PER_PROCESS: u16 = 40;

/// How long a cluster gets to become healthy before a start is retried.
const START_PATIENCE: Duration = Duration::from_secs(20);

/// Starts that may fail (ports taken by someone else) before the test fails.
const START_TRIES: usize = 4;

/// One member of the cluster.
struct Member {
    child: Option<Child>,
    client_port: u16,
}

/// A running etcd cluster; dropping it kills every member and removes its
/// data.
pub struct EtcdCluster {
    members: Vec<Member>,
    _dir: TempDir,
}

/// The etcd binary the tests run: `LOCKD_ETCD_BIN` if set, else `etcd`
/// from the `PATH`.
pub fn etcd_bin() -> std::ffi::OsString {
    std::env::var_os("LOCKD_ETCD_BIN").unwrap_or_else(|| "etcd".into())
}

/// Whether the etcd binary is installed (`.ci/run` installs Debian's
/// `etcd-server`). Cluster tests fail without it rather than pass silently.
pub fn require_etcd() {
    let found = Command::new(etcd_bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "etcd is not installed (apt-get install etcd-server), or LOCKD_ETCD_BIN does not name it"
    );
}

/// The first port of the next block of this process's range.
fn next_block() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = NEXT.fetch_add(1, Ordering::Relaxed) % BLOCKS_PER_PROCESS;
    let width = BLOCKS_PER_PROCESS * PORTS_PER_MEMBER * MEMBERS as u16;
    // 10000..32000, below Linux's ephemeral ports (32768 up) so no
    // outgoing connection holds one; split into ranges of `width`, the PID
    // picks one.
    let ranges = 22_000 / width;
    let range = (std::process::id() % u32::from(ranges)) as u16;
    10_000 + range * width + block * PORTS_PER_MEMBER * MEMBERS as u16
}

/// Whether nobody listens on `port` now (a hint, not a promise: the start
/// is retried if etcd cannot bind).
fn looks_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl EtcdCluster {
    /// Starts three members and waits until each reports healthy.
    pub fn start() -> EtcdCluster {
        require_etcd();
        let mut complaints = Vec::new();
        for _ in 0..START_TRIES {
            let base = next_block();
            let ports: Vec<u16> = (0..PORTS_PER_MEMBER * MEMBERS as u16)
                .map(|i| base + i)
                .collect();
            if !ports.iter().all(|&p| looks_free(p)) {
                complaints.push(format!("ports {base}.. in use"));
                continue;
            }
            match EtcdCluster::try_start(base) {
                Ok(cluster) => return cluster,
                Err(why) => complaints.push(why),
            }
        }
        panic!("could not start etcd: {}", complaints.join("; "));
    }

    fn try_start(base: u16) -> Result<EtcdCluster, String> {
        let dir = TempDir::new("etcd");
        let client = |i: usize| base + (i as u16) * PORTS_PER_MEMBER;
        let peer = |i: usize| client(i) + 1;
        let initial: Vec<String> = (0..MEMBERS)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", peer(i)))
            .collect();
        let token = format!("lockd-test-{}-{base}", std::process::id());
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            _dir: dir,
        };
        for i in 0..MEMBERS {
            let data = cluster._dir.path.join(format!("m{i}"));
            let log = std::fs::File::create(cluster._dir.path.join(format!("m{i}.log")))
                .map_err(|e| format!("log file: {e}"))?;
            let child = Command::new(etcd_bin())
                .arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{}",
                    client(i)
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{}",
                    client(i)
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", peer(i)))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                    peer(i)
                ))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg(format!("--initial-cluster-token={token}"))
                // etcd's defaults: shorter ones make spurious elections on a
                // loaded machine, and a node's lease renewals fail meanwhile.
                .arg("--heartbeat-interval=100")
                .arg("--election-timeout=1000")
                .arg("--log-level=warn")
                // Test data is thrown away: no fsync per write, or a
                // loaded machine's disk sets the pace of every test.
                .arg("--unsafe-no-fsync")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot run etcd: {e}"))?;
            cluster.members.push(Member {
                child: Some(child),
                client_port: client(i),
            });
        }
        let deadline = Instant::now() + START_PATIENCE;
        for i in 0..MEMBERS {
            loop {
                if let Some(status) = cluster.exited(i) {
                    let log = std::fs::read_to_string(cluster._dir.path.join(format!("m{i}.log")))
                        .unwrap_or_default();
                    let tail: String = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                    return Err(format!("member m{i} exited ({status}): {tail}"));
                }
                if cluster.healthy(i) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("member m{i} not healthy after {START_PATIENCE:?}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.members[i].child.as_mut()?.try_wait().ok().flatten()
    }

    /// Whether member `i` answers `/health` with `"health":"true"`.
    pub fn healthy(&self, i: usize) -> bool {
        let url = format!("http://127.0.0.1:{}/health", self.members[i].client_port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        match agent.get(&url).call() {
            Ok(mut reply) => reply
                .body_mut()
                .read_to_string()
                .map(|body| body.contains("\"health\":\"true\""))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The index of the member that leads now, if a live one says so.
    pub fn leader(&self) -> Option<usize> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let mut ids = Vec::new();
        let mut leader = None;
        for member in &self.members {
            let url = format!(
                "http://127.0.0.1:{}/v3/maintenance/status",
                member.client_port
            );
            let status: Option<serde_json::Value> = member.child.as_ref().and_then(|_| {
                let text = agent
                    .post(&url)
                    .send("{}")
                    .ok()?
                    .body_mut()
                    .read_to_string()
                    .ok()?;
                serde_json::from_str(&text).ok()
            });
            let field = |v: &serde_json::Value, path: &[&str]| {
                path.iter()
                    .try_fold(v, |v, k| v.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            ids.push(
                status
                    .as_ref()
                    .and_then(|s| field(s, &["header", "member_id"])),
            );
            if let Some(l) = status.as_ref().and_then(|s| field(s, &["leader"])) {
                leader = Some(l);
            }
        }
        let leader = leader?;
        ids.iter().position(|id| id.as_deref() == Some(&leader))
    }

    /// `127.0.0.1:PORT` of each member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `etcd://H1:P1,H2:P2,H3:P3`, as `lockd --cluster` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The PID of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Sends `signal` to member `i` (SIGSTOP / SIGCONT to cut a node off).
    pub fn signal(&self, i: usize, signal: i32) {
        if let Some(pid) = self.pid(i) {
            // A child we spawned and have not reaped.
            let _ = super::send_signal(pid, signal);
        }
    }

    /// Kills member `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The cluster the tests of this binary share: started by the first that
/// asks, stopped when the last one using it drops it (so a binary whose
/// tests overlap starts one).
pub fn shared() -> Arc<EtcdCluster> {
    static SHARED: Mutex<Weak<EtcdCluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock();
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(EtcdCluster::start());
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// A config for a node of `etcd` under a prefix and a node name of its own
/// (so tests sharing one etcd do not see each other's locks).
pub fn node_config(etcd: &EtcdCluster) -> EtcdConfig {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut config = EtcdConfig::new(etcd.endpoints());
    config.prefix = format!("/lockd-test-{}-{n}", std::process::id()).into_bytes();
    config.node = format!("node{n}");
    config
}

/// A cluster node in this process on the shared cluster, with defaults
/// changed by `adjust` (as [`TestServer::with_config`]).
pub fn node_server(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let etcd = shared();
    let cluster = node_config(&etcd);
    node_of(etcd, cluster, adjust)
}

/// `n` nodes of one cluster (one prefix) in this process on the shared
/// etcd, each with defaults changed by `adjust`.
pub fn nodes(n: usize, adjust: impl Fn(&mut ServerConfig)) -> Vec<TestServer> {
    let etcd = shared();
    let cluster = node_config(&etcd);
    (0..n)
        .map(|i| {
            let mut config = cluster.clone();
            config.node = format!("{}-{i}", cluster.node);
            node_of(Arc::clone(&etcd), config, &adjust)
        })
        .collect()
}

fn node_of(
    etcd: Arc<EtcdCluster>,
    cluster: EtcdConfig,
    adjust: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let mut server = TestServer::with_config(|c| {
        c.cluster = Some(cluster);
        adjust(c);
    });
    server.backing = Some(etcd);
    server
}
