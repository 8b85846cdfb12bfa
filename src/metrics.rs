//! Histograms of wait time and hold time, overall and per selected lock,
//! and connection gauges by transport: what `/metrics` and the status page
//! show beyond the `q` counters.
//!
//! Everything here is atomics bumped outside the table lock. Per-lock
//! series exist only for names that match a `--metrics-locks` pattern, and
//! for at most [`MAX_LOCK_SERIES`] distinct names over the life of the
//! process, so a client cannot grow the scrape without bound.

use crate::name::LockName;
use parking_lot::{Mutex, RwLock};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most lock names that get their own series. A matching name seen after
/// that many is counted in [`Metrics::lock_series_dropped`] instead.
pub const MAX_LOCK_SERIES: usize = 100;

/// Upper bounds of the histogram buckets, in seconds (`+Inf` is implied):
/// from 100 µs, for a lock taken and given back on one host, to an hour,
/// for a nightly job's lock.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0,
];

/// The same bounds in microseconds, for the comparison on each observation.
const BUCKETS_US: [u64; 16] = [
    100,
    500,
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    1_800_000_000,
    3_600_000_000,
];

/// A histogram of durations with the fixed [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            count: self.count.load(Relaxed),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A histogram one connection keeps to itself, under a lock it holds
/// anyway: plain adds where the shared [`Histogram`] needs three atomic
/// ones. Folded into the shared totals when the connection ends, and
/// added to them when they are read (see [`Metrics::overall`]).
#[derive(Clone, Copy, Debug, Default)]
struct LocalHistogram(Snapshot);

impl LocalHistogram {
    fn observe(&mut self, duration: Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US.partition_point(|&bound| bound < us);
        self.0.buckets[bucket] += 1;
        self.0.count += 1;
        self.0.sum_us = self.0.sum_us.saturating_add(us);
    }

    /// Adds these counts to `shared`.
    fn add_to(&self, shared: &Histogram) {
        for (total, n) in shared.buckets.iter().zip(self.0.buckets) {
            total.fetch_add(n, Relaxed);
        }
        shared.count.fetch_add(self.0.count, Relaxed);
        shared.sum_us.fetch_add(self.0.sum_us, Relaxed);
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// Observations in all.
    pub count: u64,
    /// Their sum in microseconds.
    pub sum_us: u64,
}

impl Snapshot {
    /// What was observed between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            count: self.count.saturating_sub(earlier.count),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The `q` quantile (0 to 1) in seconds, interpolated inside its
    /// bucket as Prometheus's `histogram_quantile` does; `None` with no
    /// observations. A quantile in the `+Inf` bucket is the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BUCKETS.get(i) else {
                    return BUCKETS.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
        }
        BUCKETS.last().copied()
    }
}

/// Exclusive (`g`, `wg`), read (`wr`, on the exclusive namespace) or
/// shared (`sg`, `wsg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// The writer of the exclusive namespace.
    Exclusive,
    /// The shared namespace.
    Shared,
    /// A reader of the exclusive namespace.
    Read,
}

impl LockKind {
    /// Every kind, in label order.
    pub const ALL: [LockKind; 3] = [LockKind::Exclusive, LockKind::Shared, LockKind::Read];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Exclusive => "exclusive",
            LockKind::Shared => "shared",
            LockKind::Read => "read",
        }
    }
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The lock was granted (at once or after waiting).
    Granted,
    /// The time ran out (`MS` 0 included).
    Timeout,
}

impl Outcome {
    /// Both outcomes, in label order.
    pub const ALL: [Outcome; 2] = [Outcome::Granted, Outcome::Timeout];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Timeout => "timeout",
        }
    }
}

/// The wait and hold histograms of one lock, or of all locks.
#[derive(Debug, Default)]
pub struct LockHistograms {
    /// Wait time by kind, then outcome.
    wait: [[Histogram; 2]; 3],
    /// Hold time by kind, from grant to release or orphaning.
    hold: [Histogram; 3],
}

impl LockHistograms {
    /// The wait-time histogram of one kind and outcome.
    pub fn wait(&self, kind: LockKind, outcome: Outcome) -> &Histogram {
        &self.wait[kind as usize][outcome as usize]
    }

    /// The hold-time histogram of one kind.
    pub fn hold(&self, kind: LockKind) -> &Histogram {
        &self.hold[kind as usize]
    }

    /// Adds every count of these histograms to `total`.
    fn add_to(&self, total: &LockHistograms) {
        let pairs = self.wait.iter().flatten().zip(total.wait.iter().flatten());
        for (from, to) in pairs.chain(self.hold.iter().zip(&total.hold)) {
            LocalHistogram(from.snapshot()).add_to(to);
        }
    }
}

/// How a connection reached the server, for the per-transport gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TCP with TLS.
    Tls,
    /// A Unix socket.
    Unix,
    /// WebSocket.
    WebSocket,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Unix,
        Transport::WebSocket,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Unix => "unix",
            Transport::WebSocket => "websocket",
        }
    }
}

/// A connection counted under its transport; see [`Metrics::connection`].
#[must_use = "the connection is uncounted when the guard is dropped"]
#[derive(Debug)]
pub struct Connected<'a> {
    metrics: &'a Metrics,
    transport: Transport,
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.metrics.transports[self.transport as usize].fetch_sub(1, Relaxed);
    }
}

/// A `--metrics-locks` pattern: a lock name, or a prefix ending in `*`
/// (`*` alone selects every lock, up to [`MAX_LOCK_SERIES`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this name.
    Exact(Box<[u8]>),
    /// Every name that starts with these bytes.
    Prefix(Box<[u8]>),
}

impl Pattern {
    /// Parses a pattern as `--metrics-locks` gives it.
    pub fn new(text: &[u8]) -> Pattern {
        match text.strip_suffix(b"*") {
            Some(prefix) => Pattern::Prefix(prefix.into()),
            None => Pattern::Exact(text.into()),
        }
    }

    /// Does `name` match?
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            Pattern::Exact(exact) => name == &exact[..],
            Pattern::Prefix(prefix) => name.starts_with(prefix),
        }
    }
}

/// Server-wide histograms and gauges. See the module docs.
#[derive(Debug, Default)]
pub struct Metrics {
    overall: LockHistograms,
    patterns: Vec<Pattern>,
    per_lock: RwLock<BTreeMap<LockName, Arc<LockHistograms>>>,
    dropped: AtomicU64,
    grants: [AtomicU64; LockKind::ALL.len()],
    transports: [AtomicU64; Transport::ALL.len()],
    /// Every connection's hold record, by default name.
    clients: Mutex<HashMap<Box<[u8]>, Arc<HoldTimes>>>,
}

impl Metrics {
    /// Metrics with per-lock series for names matching `patterns`.
    pub fn new(patterns: &[String]) -> Metrics {
        Metrics {
            patterns: patterns
                .iter()
                .map(|p| Pattern::new(p.as_bytes()))
                .collect(),
            ..Metrics::default()
        }
    }

    /// How long a `wg`/`wsg` waited, and how it ended.
    pub fn observe_wait(&self, kind: LockKind, name: &[u8], outcome: Outcome, waited: Duration) {
        self.overall.wait(kind, outcome).observe(waited);
        if let Some(lock) = self.lock_series(name) {
            lock.wait(kind, outcome).observe(waited);
        }
    }

    /// How long a lock was held, at its release or orphaning.
    pub fn observe_hold(&self, kind: LockKind, name: &[u8], held: Duration) {
        self.overall.hold(kind).observe(held);
        self.observe_selected_hold(kind, name, held);
    }

    /// A hold time the connection counted itself (see [`Holds`]): only
    /// the series of a `--metrics-locks` lock, if `name` has one.
    fn observe_selected_hold(&self, kind: LockKind, name: &[u8], held: Duration) {
        if let Some(lock) = self.lock_series(name) {
            lock.hold(kind).observe(held);
        }
    }

    /// Does a `--metrics-locks` pattern select `name`?
    pub fn selects(&self, name: &[u8]) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }

    /// The histograms of `name`, made on first use, when a pattern selects
    /// it and the cap allows.
    fn lock_series(&self, bytes: &[u8]) -> Option<Arc<LockHistograms>> {
        if !self.selects(bytes) {
            return None;
        }
        if let Some(lock) = self.per_lock.read().get(bytes) {
            return Some(Arc::clone(lock));
        }
        let mut per_lock = self.per_lock.write();
        if let Some(lock) = per_lock.get(bytes) {
            return Some(Arc::clone(lock));
        }
        if per_lock.len() >= MAX_LOCK_SERIES {
            self.dropped.fetch_add(1, Relaxed);
            return None;
        }
        let lock = Arc::new(LockHistograms::default());
        per_lock.insert(bytes.into(), Arc::clone(&lock));
        Some(lock)
    }

    /// The histograms over all locks, now: the shared ones plus what each
    /// connection still counts itself (a copy, made under the lock of the
    /// connections' records).
    pub fn overall(&self) -> LockHistograms {
        let all = LockHistograms::default();
        let grants = Default::default();
        let clients = self.clients.lock();
        self.overall.add_to(&all);
        for times in clients.values() {
            times.0.lock().add_to(&all, &grants);
        }
        all
    }

    /// The locks with their own series, sorted by name.
    pub fn per_lock(&self) -> Vec<(LockName, Arc<LockHistograms>)> {
        self.per_lock
            .read()
            .iter()
            .map(|(name, lock)| (name.clone(), Arc::clone(lock)))
            .collect()
    }

    /// A hold record for a new connection named `client` (`IP:PORT`,
    /// `unix:N`), registered until [`Metrics::leave`].
    pub fn holds(&self, client: &[u8]) -> Holds {
        let times = Arc::new(HoldTimes::default());
        (self.clients.lock()).insert(client.into(), Arc::clone(&times));
        Holds {
            client: client.into(),
            times,
            clock: None,
        }
    }

    /// The connection of `holds` ended: its counts join the shared ones.
    pub fn leave(&self, holds: &Holds) {
        let mut clients = self.clients.lock();
        // A newer connection may have the same name by now: keep it.
        if clients
            .get(&holds.client)
            .is_some_and(|t| Arc::ptr_eq(t, &holds.times))
        {
            clients.remove(&holds.client);
        }
        let mut record = holds.times.0.lock();
        record.add_to(&self.overall, &self.grants);
        // Counted once: a second `leave` adds nothing.
        record.grants = [0; 3];
        record.held = Default::default();
    }

    /// Every connection's hold record, for looking up hold times.
    pub fn hold_clock(&self) -> HoldClock {
        HoldClock {
            clients: self.clients.lock().clone(),
        }
    }

    /// Observations of selected locks left out because of the cap.
    pub fn lock_series_dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Grants of one kind so far (`g`, `wg`, `sg`, `wsg`): the shared
    /// count plus what each connection still counts itself.
    pub fn grants(&self, kind: LockKind) -> u64 {
        let clients = self.clients.lock();
        let live: u64 = clients
            .values()
            .map(|times| times.0.lock().grants[kind as usize])
            .sum();
        self.grants[kind as usize].load(Relaxed) + live
    }

    /// Counts a connection of `transport` until the guard is dropped
    /// (when its thread ends).
    pub fn connection(&self, transport: Transport) -> Connected<'_> {
        self.transports[transport as usize].fetch_add(1, Relaxed);
        Connected {
            metrics: self,
            transport,
        }
    }

    /// Connections of `transport` whose threads run now.
    pub fn connections(&self, transport: Transport) -> u64 {
        self.transports[transport as usize].load(Relaxed)
    }
}

/// What one connection holds and since when: its hold times are observed
/// when it lets go, what it still holds when it ends is its orphans, and
/// the status page reads how long each hold has lasted (see
/// [`Metrics::hold_clock`]). Recording a grant locks only this
/// connection's own record.
#[derive(Debug)]
pub struct Holds {
    client: Box<[u8]>,
    times: Arc<HoldTimes>,
    /// A clock reading and how many grants and releases used it: see
    /// [`Holds::new_batch`].
    clock: Option<(Instant, u32)>,
}

/// Most grants and releases that share one clock reading. A command costs
/// well under a microsecond, so a shared reading is stale by a few
/// microseconds at most: far below the histograms' first bound (100 µs).
const CLOCK_SHARED_BY: u32 = 32;

/// The shared clock reading of `clock`, or a new one.
fn now(clock: &mut Option<(Instant, u32)>) -> Instant {
    match clock {
        Some((now, uses)) if *uses < CLOCK_SHARED_BY => {
            *uses += 1;
            *now
        }
        _ => {
            let now = Instant::now();
            *clock = Some((now, 1));
            now
        }
    }
}

/// When each of one connection's holds began, by kind. Keyed by foldhash,
/// not SipHash: a map holds only its own connection's names (at most
/// `--max-locks-per-connection`), so a client that picked colliding names
/// would slow no one but itself, and it is hashed on every `g` and `r`.
#[derive(Debug, Default)]
struct HoldTimes(Mutex<HoldRecord>);

/// A lock name as a hold record keeps it: in place up to [`INLINE`]
/// bytes, so a grant of a short name allocates nothing here.
#[derive(Clone, Debug)]
enum HeldName {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

/// Longest name a [`HeldName`] keeps in place.
const INLINE: usize = 30;

impl HeldName {
    fn new(name: &[u8]) -> HeldName {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..name.len()].copy_from_slice(name);
                HeldName::Inline { len, bytes }
            }
            _ => HeldName::Heap(name.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            HeldName::Inline { len, bytes } => &bytes[..usize::from(*len)],
            HeldName::Heap(bytes) => bytes,
        }
    }
}

impl std::borrow::Borrow<[u8]> for HeldName {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

// Hashed and compared as the bytes, as `Borrow<[u8]>` requires.
impl std::hash::Hash for HeldName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for HeldName {
    fn eq(&self, other: &HeldName) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for HeldName {}

/// What [`HoldTimes`] guards.
#[derive(Debug, Default)]
struct HoldRecord {
    /// When each hold began, by kind.
    since: [HashMap<HeldName, Instant, foldhash::fast::RandomState>; 3],
    /// This connection's share of the grant counts and hold histograms
    /// (see [`LocalHistogram`]).
    grants: [u64; 3],
    held: [LocalHistogram; 3],
}

impl HoldRecord {
    /// Adds this connection's counts to the shared totals.
    fn add_to(&self, overall: &LockHistograms, grants: &[AtomicU64; 3]) {
        for kind in LockKind::ALL {
            self.held[kind as usize].add_to(overall.hold(kind));
            grants[kind as usize].fetch_add(self.grants[kind as usize], Relaxed);
        }
    }
}

/// A lock a connection held when it let go of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Let {
    /// Which namespace.
    pub kind: LockKind,
    /// The lock.
    pub name: LockName,
    /// How long it was held.
    pub held: Duration,
}

impl HoldRecord {
    /// A hold of `name` begins now, unless the connection has it already
    /// (a second grant of a lock it holds is no new hold).
    #[inline]
    fn begin(&mut self, kind: LockKind, name: &[u8], clock: &mut Option<(Instant, u32)>) {
        if let Entry::Vacant(free) = self.since[kind as usize].entry(HeldName::new(name)) {
            free.insert(now(clock));
            self.grants[kind as usize] += 1;
        }
    }

    /// The hold of `name` ends now: it goes into this connection's
    /// histogram, and how long it lasted comes back for the per-lock
    /// series, which are observed once the record is unlocked.
    #[inline]
    fn end(
        &mut self,
        kind: LockKind,
        name: &[u8],
        clock: &mut Option<(Instant, u32)>,
    ) -> Option<Duration> {
        let since = &mut self.since[kind as usize];
        // `g` asks whether a read hold became the write hold: usually
        // there is none, and no name to hash.
        if since.is_empty() {
            return None;
        }
        let since = since.remove(name)?;
        let held = now(clock).saturating_duration_since(since);
        self.held[kind as usize].observe(held);
        Some(held)
    }
}

impl Holds {
    /// The connection got `name` (a second grant of a lock it holds
    /// already is no new hold).
    pub fn granted(&mut self, kind: LockKind, name: &[u8]) {
        self.times.0.lock().begin(kind, name, &mut self.clock);
    }

    /// The connection got the write lock `name`: a read hold it had of
    /// the name, if any, became the write hold. One acquisition of the
    /// record for both (a `g` took two).
    pub fn granted_write(&mut self, metrics: &Metrics, name: &[u8]) {
        let mut record = self.times.0.lock();
        let upgraded = record.end(LockKind::Read, name, &mut self.clock);
        record.begin(LockKind::Exclusive, name, &mut self.clock);
        drop(record);
        if let Some(held) = upgraded {
            metrics.observe_selected_hold(LockKind::Read, name, held);
        }
    }

    /// The connection released `name`.
    pub fn released(&mut self, metrics: &Metrics, kind: LockKind, name: &[u8]) {
        let ended = self.times.0.lock().end(kind, name, &mut self.clock);
        if let Some(held) = ended {
            metrics.observe_selected_hold(kind, name, held);
        }
    }

    /// Commands that come next are a new batch (fresh input from the
    /// peer, or the end of a wait, a pause or a listing): the next grant
    /// or release reads the clock. Within a batch of pipelined commands,
    /// up to 32 grants and releases share one reading,
    /// where each read the clock twice (a tenth of a pipelined `g`/`r`).
    pub fn new_batch(&mut self) {
        self.clock = None;
    }

    /// The connection let go of everything (`ra`, or its end): each lock
    /// with how long it was held, longest first.
    pub fn release_all(&mut self, metrics: &Metrics) -> Vec<Let> {
        let mut record = self.times.0.lock();
        let taken = std::mem::take(&mut record.since);
        let mut all: Vec<Let> = Vec::new();
        let now = Instant::now();
        for (kind, held) in LockKind::ALL.into_iter().zip(taken) {
            for (name, since) in held {
                let held = now.saturating_duration_since(since);
                record.held[kind as usize].observe(held);
                let name = LockName::from(name.as_bytes());
                all.push(Let { kind, name, held });
            }
        }
        drop(record);
        for lock in &all {
            metrics.observe_selected_hold(lock.kind, lock.name.as_bytes(), lock.held);
        }
        all.sort_by_key(|l| std::cmp::Reverse(l.held));
        all
    }
}

/// The hold records of every connection, by default name, at one moment:
/// when a holder got a lock, for the status page and the held-now gauges.
pub struct HoldClock {
    clients: HashMap<Box<[u8]>, Arc<HoldTimes>>,
}

impl HoldClock {
    /// When `client` (a default name) got `name`, if it holds it.
    pub fn since(&self, client: &[u8], kind: LockKind, name: &[u8]) -> Option<Instant> {
        let times = self.clients.get(client)?;
        let since = times.0.lock().since[kind as usize].get(name).copied();
        since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_agree_and_observations_land_in_the_first_bound_not_below() {
        for (s, us) in BUCKETS.iter().zip(BUCKETS_US) {
            assert_eq!((s * 1e6).round() as u64, us);
        }
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // le 0.0001
        h.observe(Duration::from_micros(101)); // le 0.0005
        h.observe(Duration::from_secs(7200)); // +Inf
        let s = h.snapshot();
        assert_eq!((s.buckets[0], s.buckets[1], s.buckets[16]), (1, 1, 1));
        assert_eq!(s.count, 3);
        assert_eq!(s.sum_us, 7_200_000_201);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..10 {
            h.observe(Duration::from_millis(2)); // le 0.005, above 0.001
        }
        let q = h.snapshot().quantile(0.5).expect("observed");
        assert!((q - 0.003).abs() < 1e-9, "{q}");
        let before = h.snapshot();
        h.observe(Duration::from_secs(20));
        let delta = h.snapshot().since(&before);
        assert_eq!(delta.count, 1);
        assert_eq!(delta.quantile(0.99), Some(30.0 - (30.0 - 10.0) * 0.01));
    }

    #[test]
    fn per_lock_series_only_for_matching_names_and_capped() {
        let m = Metrics::new(&["jobs/*".into(), "exact".into()]);
        let held = Duration::from_millis(1);
        m.observe_hold(LockKind::Exclusive, b"other", held);
        m.observe_hold(LockKind::Exclusive, b"exactly", held);
        m.observe_hold(LockKind::Exclusive, b"exact", held);
        for i in 0..MAX_LOCK_SERIES + 5 {
            m.observe_hold(LockKind::Shared, format!("jobs/{i}").as_bytes(), held);
        }
        assert_eq!(m.overall().hold(LockKind::Exclusive).snapshot().count, 3);
        let per_lock = m.per_lock();
        assert_eq!(per_lock.len(), MAX_LOCK_SERIES);
        assert_eq!(per_lock[0].0, LockName::from("exact"));
        assert_eq!(m.lock_series_dropped(), 6);
        assert!(Pattern::new(b"*").matches(b"anything"));
    }

    #[test]
    fn held_names_short_and_long_are_found_by_their_bytes() {
        let m = Metrics::new(&[]);
        let mut holds = m.holds(b"127.0.0.1:2");
        let names = [&b""[..], &[b'a'; INLINE][..], &[b'b'; INLINE + 1][..]];
        for name in names {
            assert_eq!(HeldName::new(name).as_bytes(), name);
            holds.granted(LockKind::Read, name);
        }
        let clock = m.hold_clock();
        assert!(names
            .iter()
            .all(|n| clock.since(b"127.0.0.1:2", LockKind::Read, n).is_some()));
        holds.released(&m, LockKind::Read, &[b'b'; INLINE + 1]);
        let mut left: Vec<_> = holds.release_all(&m).into_iter().map(|l| l.name).collect();
        left.sort();
        assert_eq!(
            left,
            [LockName::from(""), LockName::from(&[b'a'; INLINE][..])]
        );
        m.leave(&holds);
        assert_eq!(m.overall().hold(LockKind::Read).snapshot().count, 3);
        assert_eq!(m.grants(LockKind::Read), 3);
    }

    #[test]
    fn holds_count_each_grant_once_and_observe_at_release() {
        let m = Metrics::new(&[]);
        let mut holds = m.holds(b"127.0.0.1:1");
        let x = LockName::from("x");
        holds.granted(LockKind::Exclusive, x.as_bytes());
        holds.granted(LockKind::Exclusive, x.as_bytes());
        holds.granted(LockKind::Shared, x.as_bytes());
        assert_eq!(m.grants(LockKind::Exclusive), 1);
        holds.released(&m, LockKind::Exclusive, b"x");
        holds.released(&m, LockKind::Exclusive, b"x");
        assert_eq!(m.overall().hold(LockKind::Exclusive).snapshot().count, 1);
        let left = holds.release_all(&m);
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].kind, &left[0].name), (LockKind::Shared, &x));
        assert!(holds.release_all(&m).is_empty());
        holds.granted(LockKind::Exclusive, x.as_bytes());
        let clock = m.hold_clock();
        assert!(clock
            .since(b"127.0.0.1:1", LockKind::Exclusive, b"x")
            .is_some());
        assert!(clock
            .since(b"127.0.0.1:1", LockKind::Shared, b"x")
            .is_none());
        m.leave(&holds);
        assert!(m
            .hold_clock()
            .since(b"127.0.0.1:1", LockKind::Exclusive, b"x")
            .is_none());
    }
}
