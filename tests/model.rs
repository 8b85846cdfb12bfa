//! Model-based property tests of the lock table (issue 8): random
//! sequences of operations by a few clients on a few names, run against
//! `lockd::store::Table` and against a plain reference model written here
//! (maps and queues, no threads), comparing every return value, every grant
//! message on the clients' channels, and the whole visible state after
//! every step.
//!
//! The model states PROTOCOL.md Part 2 directly: one line per name holds
//! `wg` and `wr` waiters, and a freed name goes to its head (one writer, or
//! every reader up to the next writer); a reader asking to write goes to
//! the head and is granted once it is the only reader; a semaphore admits
//! waiters in order while the first fits its limit (a newcomer queues
//! behind anyone waiting); a wait that would close a cycle, through
//! writers, readers or semaphore holders, is refused; every write grant
//! draws a fresh token above every token before it. Token values are
//! not predicted (a client releasing several locks hands them over in an
//! unspecified order), only checked to grow.
//!
//! Seeded: the seeds are printed, `LOCKD_SEED=N` replays one.

mod common;

use common::rng::{seed_override, seeds, Rng};
use crossbeam_channel::{bounded, Receiver};
use lockd::store::{ClientId, Counts, Grant, LockStore, Released, Table, WaitStart};
use lockd::token::TokenCounter;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;

/// Client slots; a disconnected slot reconnects later under a new id.
const SLOTS: usize = 5;
/// The empty name, NUL, invalid UTF-8 and an inner space, as the protocol
/// allows; the same names serve both namespaces (which never conflict).
const NAMES: [&[u8]; 3] = [b"x", b"", b"n\0\xff y"];
const STEPS: usize = 3000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    Read,
    Shared,
}

/// One name of the exclusive namespace: a writer or readers, and one line.
#[derive(Default)]
struct ModelLock {
    /// The writer and its token (`None` between a handover and the test
    /// reading the grant).
    writer: Option<(ClientId, Option<u64>)>,
    readers: Vec<ClientId>,
    line: VecDeque<(ClientId, Kind)>,
}

impl ModelLock {
    fn holders(&self) -> Vec<ClientId> {
        let mut all: Vec<ClientId> = self.writer.map(|(w, _)| w).into_iter().collect();
        all.extend(&self.readers);
        all
    }

    fn empty(&self) -> bool {
        self.writer.is_none() && self.readers.is_empty() && self.line.is_empty()
    }
}

#[derive(Default)]
struct ModelShared {
    holders: Vec<ClientId>,
    waiters: VecDeque<(ClientId, u32)>,
}

/// A grant message the model says a client must find on its channel.
#[derive(Debug)]
enum Notice {
    Exclusive(Vec<u8>),
    Read { readers: usize },
    Shared { holders: usize },
}

/// What the model says a lock request must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// Granted with a fresh token.
    New,
    /// Already this client's: granted with the token it has.
    Same(u64),
    /// A read grant with this many readers.
    Read(usize),
    /// A shared grant with this many holders.
    Shared(usize),
    Queued,
    Busy,
    Deadlock,
}

#[derive(Default)]
struct Model {
    locks: BTreeMap<Vec<u8>, ModelLock>,
    shared: BTreeMap<Vec<u8>, ModelShared>,
    waiting: HashMap<ClientId, (Kind, Vec<u8>)>,
    grants: u64,
    notices: HashMap<ClientId, Notice>,
}

fn fits(holders: usize, limit: u32) -> bool {
    limit == 0 || holders < limit as usize
}

impl Model {
    fn tidy(&mut self, name: &[u8]) {
        if self.locks.get(name).is_some_and(ModelLock::empty) {
            self.locks.remove(name);
        }
    }

    /// Everyone `id` waits for: every holder of its lock but itself.
    fn waits_for(&self, id: ClientId) -> Vec<ClientId> {
        let holders = match self.waiting.get(&id) {
            None => Vec::new(),
            Some((Kind::Shared, name)) => self.shared[name].holders.clone(),
            Some((_, name)) => self.locks[name].holders(),
        };
        holders.into_iter().filter(|&h| h != id).collect()
    }

    /// Is `waiter` reachable from `holders` along "waits for" edges?
    fn closes_cycle(&self, waiter: ClientId, holders: Vec<ClientId>) -> bool {
        let mut reached: Vec<ClientId> = Vec::new();
        let mut next = holders;
        while let Some(c) = next.pop() {
            if c == waiter {
                return true;
            }
            if !reached.contains(&c) {
                reached.push(c);
                next.extend(self.waits_for(c));
            }
        }
        false
    }

    fn lock(&mut self, id: ClientId, name: &[u8], queue: bool) -> Start {
        let lock = self.locks.entry(name.to_vec()).or_default();
        if let Some((_, token)) = lock.writer.filter(|(w, _)| *w == id) {
            return Start::Same(token.expect("token known between steps"));
        }
        let upgrade = lock.readers.contains(&id);
        let others = lock.readers.iter().any(|&r| r != id);
        if lock.writer.is_none() && !others && (upgrade || lock.line.is_empty()) {
            lock.readers.clear();
            lock.writer = Some((id, None));
            self.grants += 1;
            return Start::New;
        }
        let holders: Vec<ClientId> = lock.holders().into_iter().filter(|&h| h != id).collect();
        if !queue {
            return Start::Busy;
        }
        if self.closes_cycle(id, holders) {
            return Start::Deadlock;
        }
        let line = &mut self.locks.get_mut(name).expect("entry").line;
        if upgrade {
            line.push_front((id, Kind::Write));
        } else {
            line.push_back((id, Kind::Write));
        }
        self.waiting.insert(id, (Kind::Write, name.to_vec()));
        Start::Queued
    }

    fn read(&mut self, id: ClientId, name: &[u8], queue: bool) -> Start {
        let lock = self.locks.entry(name.to_vec()).or_default();
        if lock.readers.contains(&id) {
            return Start::Read(lock.readers.len());
        }
        if lock.writer.is_none() && lock.line.is_empty() {
            lock.readers.push(id);
            return Start::Read(lock.readers.len());
        }
        let holders = lock.holders();
        if !queue {
            return Start::Busy;
        }
        if holders.contains(&id) || self.closes_cycle(id, holders) {
            return Start::Deadlock;
        }
        let lock = self.locks.get_mut(name).expect("entry");
        lock.line.push_back((id, Kind::Read));
        self.waiting.insert(id, (Kind::Read, name.to_vec()));
        Start::Queued
    }

    /// Serves the head of the line: one writer, or readers up to the next
    /// writer.
    fn serve(&mut self, name: &[u8]) {
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        while let Some(&(next, kind)) = lock.line.front() {
            if lock.writer.is_some() {
                break;
            }
            if kind == Kind::Write {
                if lock.readers.iter().any(|&r| r != next) {
                    break;
                }
                lock.line.pop_front();
                lock.readers.clear();
                lock.writer = Some((next, None));
                self.grants += 1;
                self.waiting.remove(&next);
                self.notices.insert(next, Notice::Exclusive(name.to_vec()));
                break;
            }
            lock.line.pop_front();
            lock.readers.push(next);
            self.waiting.remove(&next);
            let readers = lock.readers.len();
            self.notices.insert(next, Notice::Read { readers });
        }
        self.tidy(name);
    }

    fn release(&mut self, id: ClientId, name: &[u8]) -> bool {
        let Some(lock) = self.locks.get_mut(name) else {
            return false;
        };
        if lock.writer.is_none_or(|(w, _)| w != id) {
            return false;
        }
        lock.writer = None;
        self.serve(name);
        true
    }

    fn release_read(&mut self, id: ClientId, name: &[u8]) -> bool {
        let Some(lock) = self.locks.get_mut(name) else {
            return false;
        };
        let Some(pos) = lock.readers.iter().position(|&r| r == id) else {
            return false;
        };
        lock.readers.remove(pos);
        self.serve(name);
        true
    }

    fn lock_shared(&mut self, id: ClientId, name: &[u8]) -> usize {
        let lock = self.shared.entry(name.to_vec()).or_default();
        if !lock.holders.contains(&id) {
            lock.holders.push(id);
        }
        lock.holders.len()
    }

    fn lock_shared_or_queue(
        &mut self,
        id: ClientId,
        name: &[u8],
        limit: u32,
        queue: bool,
    ) -> Start {
        let lock = self.shared.entry(name.to_vec()).or_default();
        if lock.holders.contains(&id) {
            return Start::Shared(lock.holders.len());
        }
        if lock.waiters.is_empty() && fits(lock.holders.len(), limit) {
            lock.holders.push(id);
            return Start::Shared(lock.holders.len());
        }
        let holders = lock.holders.clone();
        if !queue || self.closes_cycle(id, holders) {
            let lock = &self.shared[name];
            if lock.holders.is_empty() && lock.waiters.is_empty() {
                self.shared.remove(name);
            }
            return if queue { Start::Deadlock } else { Start::Busy };
        }
        let lock = self.shared.get_mut(name).expect("entry");
        lock.waiters.push_back((id, limit));
        self.waiting.insert(id, (Kind::Shared, name.to_vec()));
        Start::Queued
    }

    fn release_shared(&mut self, id: ClientId, name: &[u8]) -> bool {
        let Some(lock) = self.shared.get_mut(name) else {
            return false;
        };
        let Some(pos) = lock.holders.iter().position(|h| *h == id) else {
            return false;
        };
        lock.holders.remove(pos);
        self.admit(name);
        true
    }

    /// Admits waiters in order while the first in line fits.
    fn admit(&mut self, name: &[u8]) {
        let Some(lock) = self.shared.get_mut(name) else {
            return;
        };
        while let Some(&(next, limit)) = lock.waiters.front() {
            if !fits(lock.holders.len(), limit) {
                break;
            }
            lock.waiters.pop_front();
            lock.holders.push(next);
            self.waiting.remove(&next);
            self.notices.insert(
                next,
                Notice::Shared {
                    holders: lock.holders.len(),
                },
            );
        }
        if lock.holders.is_empty() && lock.waiters.is_empty() {
            self.shared.remove(name);
        }
    }

    fn cancel_wait(&mut self, id: ClientId) -> bool {
        let Some((kind, name)) = self.waiting.remove(&id) else {
            return false;
        };
        match kind {
            Kind::Write | Kind::Read => {
                self.locks
                    .get_mut(&name)
                    .expect("waited-for lock exists")
                    .line
                    .retain(|(w, _)| *w != id);
                self.serve(&name);
            }
            Kind::Shared => {
                let lock = self.shared.get_mut(&name).expect("waited-for lock exists");
                lock.waiters.retain(|(w, _)| *w != id);
                self.admit(&name);
            }
        }
        true
    }

    fn release_all(&mut self, id: ClientId) -> Released {
        let written: Vec<Vec<u8>> = self
            .locks
            .iter()
            .filter(|(_, l)| l.writer.is_some_and(|(w, _)| w == id))
            .map(|(n, _)| n.clone())
            .collect();
        let read: Vec<Vec<u8>> = self
            .locks
            .iter()
            .filter(|(_, l)| l.readers.contains(&id))
            .map(|(n, _)| n.clone())
            .collect();
        let shared: Vec<Vec<u8>> = self
            .shared
            .iter()
            .filter(|(_, l)| l.holders.contains(&id))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &written {
            self.release(id, name);
        }
        for name in &read {
            self.release_read(id, name);
        }
        for name in &shared {
            self.release_shared(id, name);
        }
        Released {
            exclusive: written.len(),
            read: read.len(),
            shared: shared.len(),
        }
    }

    fn disconnect(&mut self, id: ClientId) -> Released {
        self.cancel_wait(id);
        self.release_all(id)
    }
}

struct Client {
    id: ClientId,
    grants: Receiver<Grant>,
}

/// How often the interesting transitions happened, so a generator that
/// stopped reaching them fails loudly.
#[derive(Default)]
struct Coverage(BTreeMap<&'static str, usize>);

impl Coverage {
    fn hit(&mut self, what: &'static str) {
        *self.0.entry(what).or_default() += 1;
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    table: Table,
    model: Model,
    slots: Vec<Option<Client>>,
    next_id: ClientId,
    step: usize,
    trace: VecDeque<String>,
    /// Highest token seen before this step.
    max_token: u64,
    /// Tokens drawn during this step.
    step_tokens: Vec<u64>,
    coverage: Coverage,
}

fn default_name(id: ClientId) -> Vec<u8> {
    format!("c{id}").into_bytes()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            seed,
            rng: Rng::new(seed),
            table: Table::new(TokenCounter::in_memory()),
            model: Model::default(),
            slots: (0..SLOTS).map(|_| None).collect(),
            next_id: 1,
            step: 0,
            trace: VecDeque::new(),
            max_token: 0,
            step_tokens: Vec::new(),
            coverage: Coverage::default(),
        }
    }

    fn fail(&self, what: String) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "seed {:#x} (LOCKD_SEED={:#x}), step {}: {what}\nlast operations:\n  {}",
            self.seed,
            self.seed,
            self.step,
            trace.join("\n  ")
        );
    }

    fn eq<T: PartialEq + Debug>(&self, got: T, want: T, what: &str) {
        if got != want {
            self.fail(format!("{what}: table {got:?}, model {want:?}"));
        }
    }

    fn note(&mut self, op: String) {
        if self.trace.len() == 40 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("#{} {op}", self.step));
    }

    /// A token the table says it just drew for `name`.
    fn fresh_token(&mut self, name: &[u8], token: u64) {
        if token <= self.max_token || self.step_tokens.contains(&token) {
            self.fail(format!(
                "token {token} for {:?} is not fresh (max before this step {}, this step {:?})",
                name.escape_ascii().to_string(),
                self.max_token,
                self.step_tokens
            ));
        }
        self.step_tokens.push(token);
        let writer = self
            .model
            .locks
            .get_mut(name)
            .and_then(|l| l.writer.as_mut());
        match writer {
            Some((_, held)) if held.is_none() => *held = Some(token),
            _ => self.fail(format!(
                "token {token} for a lock the model did not hand out"
            )),
        }
    }

    fn run(mut self, steps: usize) -> Coverage {
        for step in 0..steps {
            self.step = step;
            self.step_tokens.clear();
            self.one_step();
            self.check_grants();
            self.check_state();
            self.max_token = self
                .step_tokens
                .iter()
                .copied()
                .max()
                .unwrap_or(self.max_token)
                .max(self.max_token);
        }
        // Everyone leaves: the table must end empty.
        for slot in 0..SLOTS {
            if self.slots[slot].is_some() {
                self.disconnect(slot);
                self.check_grants();
                self.check_state();
            }
        }
        self.eq(self.table.counts().unwrap().locks, 0, "locks at the end");
        self.eq(
            self.table.counts().unwrap().shared_locks,
            0,
            "shared locks at the end",
        );
        self.eq(
            self.table.counts().unwrap().read_locks,
            0,
            "read locks at the end",
        );
        self.eq(
            self.table.counts().unwrap().waiting,
            0,
            "waiting at the end",
        );
        self.coverage
    }

    fn one_step(&mut self) {
        let slot = self.rng.below(SLOTS as u64) as usize;
        let Some(client) = &self.slots[slot] else {
            let id = self.next_id;
            self.next_id += 1;
            let (tx, rx) = bounded(1);
            self.note(format!("connect c{id}"));
            self.table
                .connect(id, default_name(id).into_boxed_slice(), tx);
            self.slots[slot] = Some(Client { id, grants: rx });
            return;
        };
        let id = client.id;
        if self.model.waiting.contains_key(&id) {
            // A waiting connection can only give up or go away.
            match self.rng.below(100) {
                0..=24 => self.cancel_wait(id),
                25..=34 => self.disconnect(slot),
                _ => {}
            }
            return;
        }
        let name = *self.rng.pick(&NAMES);
        let shown = name.escape_ascii().to_string();
        match self.rng.below(100) {
            0..=11 => {
                self.note(format!("c{id} try_lock {shown:?}"));
                let want = self.model.lock(id, name, false);
                let got = self.table.try_lock(id, name);
                match (want, got) {
                    (Start::New, Some(token)) => self.fresh_token(name, token),
                    (Start::Same(want), Some(got)) => self.eq(got, want, "re-get token"),
                    (Start::Busy, None) => {}
                    (want, got) => self.fail(format!("try_lock: table {got:?}, model {want:?}")),
                }
            }
            12..=25 => {
                let queue = self.rng.chance(85);
                self.note(format!("c{id} lock_or_queue {shown:?} queue={queue}"));
                let want = self.model.lock(id, name, queue);
                let got = self.table.lock_or_queue(id, name, queue).unwrap();
                self.compare_start(name, want, got);
            }
            26..=35 => {
                self.note(format!("c{id} release {shown:?}"));
                let want = self.model.release(id, name);
                let got = self.table.release(id, name).unwrap();
                self.eq(got, want, "release");
            }
            36..=45 => {
                let queue = self.rng.chance(85);
                self.note(format!("c{id} read_or_queue {shown:?} queue={queue}"));
                let want = self.model.read(id, name, queue);
                let got = self.table.read_or_queue(id, name, queue).unwrap();
                self.compare_start(name, want, got);
            }
            46..=53 => {
                self.note(format!("c{id} release_read {shown:?}"));
                let want = self.model.release_read(id, name);
                let got = self.table.release_read(id, name).unwrap();
                self.eq(got, want, "release_read");
            }
            54..=58 => {
                self.note(format!("c{id} lock_shared {shown:?}"));
                let want = self.model.lock_shared(id, name);
                let got = self.table.lock_shared(id, name).unwrap();
                self.eq(got, want, "lock_shared holders");
            }
            59..=70 => {
                let limit = self.rng.below(4) as u32;
                let queue = self.rng.chance(85);
                self.note(format!(
                    "c{id} lock_shared_or_queue {shown:?} limit={limit} queue={queue}"
                ));
                let want = self.model.lock_shared_or_queue(id, name, limit, queue);
                let got = self
                    .table
                    .lock_shared_or_queue(id, name, limit, queue)
                    .unwrap();
                self.compare_start(name, want, got);
            }
            71..=79 => {
                self.note(format!("c{id} release_shared {shown:?}"));
                let want = self.model.release_shared(id, name);
                let got = self.table.release_shared(id, name).unwrap();
                self.eq(got, want, "release_shared");
            }
            80..=83 => {
                self.note(format!("c{id} release_all"));
                let want = self.model.release_all(id);
                let got = self.table.release_all(id).unwrap();
                self.eq(got, want, "release_all");
            }
            84..=88 => self.cancel_wait(id),
            _ => self.disconnect(slot),
        }
    }

    fn compare_start(&mut self, name: &[u8], want: Start, got: WaitStart) {
        match (want, got) {
            (Start::New, WaitStart::Granted(Grant::Exclusive { token })) => {
                self.fresh_token(name, token)
            }
            (Start::Same(want), WaitStart::Granted(Grant::Exclusive { token })) => {
                self.eq(token, want, "re-get token")
            }
            (Start::Read(want), WaitStart::Granted(Grant::Read { readers })) => {
                self.eq(readers, want, "read grant readers")
            }
            (Start::Shared(want), WaitStart::Granted(Grant::Shared { holders })) => {
                self.eq(holders, want, "shared grant holders")
            }
            (Start::Queued, WaitStart::Queued) => self.coverage.hit("queued"),
            (Start::Busy, WaitStart::Busy) => self.coverage.hit("busy"),
            (Start::Deadlock, WaitStart::Deadlock) => self.coverage.hit("deadlock refused"),
            (want, got) => self.fail(format!("lock request: table {got:?}, model {want:?}")),
        }
    }

    fn cancel_wait(&mut self, id: ClientId) {
        self.note(format!("c{id} cancel_wait"));
        let want = self.model.cancel_wait(id);
        let got = self.table.cancel_wait(id);
        self.eq(got, want, "cancel_wait");
        if want {
            self.coverage.hit("wait cancelled");
        }
    }

    fn disconnect(&mut self, slot: usize) {
        let id = self.slots[slot].as_ref().expect("connected").id;
        self.note(format!("c{id} disconnect"));
        let want = self.model.disconnect(id);
        let got = self.table.disconnect(id);
        self.eq(got, want, "disconnect released");
        self.slots[slot] = None;
    }

    /// Every grant message the model expects, and no other.
    fn check_grants(&mut self) {
        for slot in 0..SLOTS {
            let Some(client) = &self.slots[slot] else {
                continue;
            };
            let id = client.id;
            let got: Vec<Grant> = client.grants.try_iter().collect();
            let want = self.model.notices.remove(&id);
            match (want, got.as_slice()) {
                (None, []) => {}
                (Some(Notice::Exclusive(name)), [Grant::Exclusive { token }]) => {
                    self.coverage.hit("exclusive handover");
                    self.fresh_token(&name, *token);
                }
                (Some(Notice::Read { readers }), [Grant::Read { readers: got }]) => {
                    self.coverage.hit("read handover");
                    self.eq(*got, readers, "readers after the grant");
                }
                (Some(Notice::Shared { holders }), [Grant::Shared { holders: got }]) => {
                    self.coverage.hit("semaphore admission");
                    self.eq(*got, holders, "admitted with holders");
                }
                (want, got) => self.fail(format!("c{id} grants: table {got:?}, model {want:?}")),
            }
        }
        if !self.model.notices.is_empty() {
            let left = format!("{:?}", self.model.notices);
            self.fail(format!("grants for clients that left: {left}"));
        }
    }

    /// The whole visible state: gauges, views in order, per-name answers.
    fn check_state(&self) {
        let model = &self.model;
        self.eq(
            self.table.counts().unwrap(),
            Counts {
                locks: model.locks.values().filter(|l| l.writer.is_some()).count(),
                read_locks: model
                    .locks
                    .values()
                    .filter(|l| !l.readers.is_empty())
                    .count(),
                shared_locks: model.shared.len(),
                waiting: model.waiting.len(),
                grants: model.grants,
                refused: Default::default(),
            },
            "counts",
        );
        type ExclusiveRow = (Vec<u8>, Vec<u8>, u64, Vec<Vec<u8>>);
        let got: Vec<ExclusiveRow> = self
            .table
            .exclusive_locks(b"")
            .unwrap()
            .into_iter()
            .map(|v| {
                let waiters = v.waiters.iter().map(|w| w.to_vec()).collect();
                (
                    v.name.as_bytes().to_vec(),
                    v.holder.default.to_vec(),
                    v.token,
                    waiters,
                )
            })
            .collect();
        let line = |l: &ModelLock| -> Vec<Vec<u8>> {
            l.line.iter().map(|(w, _)| default_name(*w)).collect()
        };
        let want: Vec<ExclusiveRow> = model
            .locks
            .iter()
            .filter_map(|(name, l)| {
                let (writer, token) = l.writer?;
                let token = token.expect("token known after the grants were read");
                Some((name.clone(), default_name(writer), token, line(l)))
            })
            .collect();
        self.eq(got, want, "write-held locks (holder, token, line in order)");
        type ReadRow = (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>);
        let got: Vec<ReadRow> = self
            .table
            .read_locks(b"")
            .unwrap()
            .into_iter()
            .map(|v| {
                let readers = v.readers.iter().map(|r| r.to_vec()).collect();
                let waiters = v.waiters.iter().map(|w| w.to_vec()).collect();
                (v.name.as_bytes().to_vec(), readers, waiters)
            })
            .collect();
        let want: Vec<ReadRow> = model
            .locks
            .iter()
            .filter(|(_, l)| !l.readers.is_empty())
            .map(|(name, l)| {
                let readers = l.readers.iter().map(|r| default_name(*r)).collect();
                (name.clone(), readers, line(l))
            })
            .collect();
        self.eq(got, want, "read-held locks (readers, line in order)");
        type SharedRow = (Vec<u8>, Vec<Vec<u8>>, Vec<(Vec<u8>, u32)>);
        let got: Vec<SharedRow> = self
            .table
            .shared_locks(b"")
            .unwrap()
            .into_iter()
            .map(|v| {
                let holders = v.holders.iter().map(|h| h.default.to_vec()).collect();
                let waiters = v.waiters.iter().map(|(w, l)| (w.to_vec(), *l)).collect();
                (v.name.as_bytes().to_vec(), holders, waiters)
            })
            .collect();
        let want: Vec<SharedRow> = model
            .shared
            .iter()
            .map(|(name, l)| {
                let holders = l.holders.iter().map(|h| default_name(*h)).collect();
                let waiters = l
                    .waiters
                    .iter()
                    .map(|(w, l)| (default_name(*w), *l))
                    .collect();
                (name.clone(), holders, waiters)
            })
            .collect();
        self.eq(got, want, "shared locks (holders and waiters in order)");
        for name in NAMES {
            let lock = model.locks.get(name);
            let held = lock.is_some_and(|l| l.writer.is_some() || !l.readers.is_empty());
            self.eq(self.table.is_locked(name).unwrap(), held, "is_locked");
            let holders = model.shared.get(name).map_or(0, |l| l.holders.len());
            self.eq(
                self.table.shared_count(name).unwrap(),
                holders,
                "shared_count",
            );
            for client in self.slots.iter().flatten() {
                let want = lock
                    .and_then(|l| l.writer)
                    .filter(|(w, _)| *w == client.id)
                    .and_then(|(_, token)| token);
                self.eq(self.table.token(client.id, name).unwrap(), want, "token");
            }
        }
    }
}

#[test]
fn lock_table_matches_the_model() {
    let mut total = Coverage::default();
    for seed in seeds("lock_table_matches_the_model", &[1, 2, 3, 0x5eed_1ead]) {
        for (what, n) in Sim::new(seed).run(STEPS).0 {
            *total.0.entry(what).or_default() += n;
        }
    }
    println!("coverage: {:?}", total.0);
    if seed_override().is_none() {
        for what in [
            "queued",
            "busy",
            "deadlock refused",
            "wait cancelled",
            "exclusive handover",
            "read handover",
            "semaphore admission",
        ] {
            assert!(
                total.0.get(what).copied().unwrap_or(0) > 0,
                "the generator never reached {what:?}: {:?}",
                total.0
            );
        }
    }
}
