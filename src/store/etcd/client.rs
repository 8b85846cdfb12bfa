//! A small blocking client for etcd's v3 API through its JSON gateway
//! (`POST /v3/...`; etcd 3.4 and 3.5): key-value reads and writes, one
//! transaction shape, leases, and watches read as a streamed response.
//!
//! Requests go to one member; when it cannot be reached, or answers that
//! it has no leader, the next member is tried, and the one that answered
//! is used from then on. Keys and values are bytes (base64 on the wire);
//! etcd's 64-bit integers arrive as JSON strings.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// A failure talking to etcd.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum EtcdError {
    /// No member answered (all refused, timed out, or had no leader).
    Unreachable {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// What the last one said.
        last: String,
    },
    /// A member answered with an error (etcd's gRPC code and message).
    Status {
        /// gRPC status code (5 = not found, e.g. an expired lease).
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// A reply that is not what the API promises.
    Protocol(String),
    /// A conditional write lost to other writers on every one of its
    /// tries: what it guards kept changing under it.
    Contended {
        /// What kept changing.
        what: &'static str,
        /// Tries made.
        tries: usize,
    },
}

impl EtcdError {
    /// Whether no member could be reached: the cluster's state is unknown.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, EtcdError::Unreachable { .. })
    }

    /// Whether etcd said the thing asked for does not exist (an expired or
    /// revoked lease).
    pub fn is_not_found(&self) -> bool {
        matches!(self, EtcdError::Status { code: 5, .. })
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Unreachable { endpoints, last } => write!(
                f,
                "no etcd member answers at {}: {last} (is etcd running and reachable from here?)",
                endpoints.join(",")
            ),
            EtcdError::Status { code, message } => write!(f, "etcd error {code}: {message}"),
            EtcdError::Protocol(what) => write!(f, "unexpected reply from etcd: {what}"),
            EtcdError::Contended { what, tries } => write!(
                f,
                "{what} changed under each of {tries} tries (too many clients at once; try again)"
            ),
        }
    }
}

impl std::error::Error for EtcdError {}

/// One key as etcd stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// The lease the key hangs on (0: none).
    pub lease: i64,
}

/// What a compare in a transaction looks at.
#[derive(Clone, Debug)]
pub enum Target {
    /// The create revision (0 for a key that does not exist).
    CreateRevision(i64),
    /// The last-modified revision.
    ModRevision(i64),
}

/// How a compare relates the key's field to the given number.
#[derive(Clone, Copy, Debug)]
pub enum Relation {
    /// Equal.
    Equal,
    /// The key's field is greater.
    Greater,
    /// The key's field is less.
    Less,
}

/// One condition of a transaction. With `range_end`, it must hold for every
/// key in `[key, range_end)`; an empty range compares as one absent key.
#[derive(Clone, Debug)]
pub struct Compare {
    /// The key (or the start of the range).
    pub key: Vec<u8>,
    /// End of the range, exclusive; `None` for the single key.
    pub range_end: Option<Vec<u8>>,
    /// The relation.
    pub relation: Relation,
    /// The field and the number it is compared with.
    pub target: Target,
}

impl Compare {
    /// Holds when no key under `prefix` was written after `revision`
    /// (etcd 3.3 and later compare a whole range: every key's mod
    /// revision must be below `revision + 1`). A key deleted since does
    /// not count (it is no longer in the range), nor does an empty range.
    pub fn unchanged_since(prefix: &[u8], revision: i64) -> Compare {
        Compare {
            key: prefix.to_vec(),
            range_end: Some(prefix_end(prefix)),
            relation: Relation::Less,
            target: Target::ModRevision(revision + 1),
        }
    }
}

/// How a range read orders its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By key, as etcd stores them.
    Key,
    /// Oldest create revision first: the order of a line of waiters.
    Created,
    /// Oldest last write first.
    Modified,
}

/// A read of the keys in `[key, range_end)`.
#[derive(Clone, Debug)]
pub struct Range {
    /// First key.
    pub key: Vec<u8>,
    /// End, exclusive (`None`: only `key`).
    pub range_end: Option<Vec<u8>>,
    /// At most this many keys (0: all).
    pub limit: i64,
    /// Order of the keys.
    pub order: Order,
}

impl Range {
    /// Every key starting with `prefix`, in `order`.
    pub fn prefix(prefix: &[u8], order: Order) -> Range {
        Range {
            key: prefix.to_vec(),
            range_end: Some(prefix_end(prefix)),
            limit: 0,
            order,
        }
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// A range read.
    Range(Range),
    /// A put, on a lease (0: none).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The lease.
        lease: i64,
    },
    /// A delete of one key, or of `[key, range_end)`.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// End of the range, exclusive.
        range_end: Option<Vec<u8>>,
    },
}

/// One transaction: if every compare holds, `success`, else `failure`.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    /// The conditions.
    pub compares: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<Op>,
    /// Ops run otherwise.
    pub failure: Vec<Op>,
}

/// The answer to one operation of a transaction, in order.
#[derive(Clone, Debug)]
pub enum OpResult {
    /// Keys read, and how many matched in all.
    Range {
        /// The keys.
        kvs: Vec<KeyValue>,
        /// Keys in the range (ignoring the limit).
        count: i64,
    },
    /// A put happened.
    Put,
    /// How many keys a delete removed.
    Delete {
        /// Keys deleted.
        deleted: i64,
    },
}

/// The answer to a transaction.
#[derive(Clone, Debug)]
pub struct TxnResult {
    /// Whether every compare held (so the success ops ran).
    pub succeeded: bool,
    /// The store's revision after the transaction: the revision of its
    /// writes, if it wrote.
    pub revision: i64,
    /// One result per op that ran.
    pub results: Vec<OpResult>,
    /// Its place among the transactions of one request that write an
    /// exclusive lock's key, given by the group committer (the fencing
    /// token's slot, see `keys::SLOTS`); 0 for a transaction sent alone.
    pub slot: u64,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted (by a delete or its lease's expiry), at `revision`.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The revision of the delete.
        revision: i64,
    },
}

/// What one message of a watch stream said.
#[derive(Clone, Debug)]
pub enum WatchMessage {
    /// The watch was created, as of `revision`.
    Created {
        /// The store's revision then.
        revision: i64,
    },
    /// Changes, in order.
    Events {
        /// The store's revision at the last of them.
        revision: i64,
        /// The changes.
        events: Vec<Event>,
    },
    /// etcd ended the watch: the revision asked for was compacted away
    /// (`compact_revision`), or it cancelled the watch for another reason.
    Cancelled {
        /// The oldest revision still available, or 0.
        compact_revision: i64,
    },
}

/// A watch: a streamed response, read on the caller's thread. A read that
/// sees nothing within the client's idle bound fails, so a dead member is
/// noticed; the caller starts a new watch from the next revision.
pub struct Watch {
    stream: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<WatchBody>, Value>,
}

/// The body of a watch response as a reader.
pub struct WatchBody(ureq::BodyReader<'static>);

impl Read for WatchBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Watch {
    /// Blocks for the next message.
    ///
    /// # Errors
    /// The stream ended or broke, idled past the bound, or sent an error.
    pub fn next_message(&mut self) -> Result<WatchMessage, EtcdError> {
        let value = match self.stream.next() {
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(EtcdError::Protocol(format!("watch stream: {e}"))),
            None => return Err(EtcdError::Protocol("watch stream ended".into())),
        };
        if let Some(error) = value.get("error") {
            return Err(status_error(error));
        }
        let result = value
            .get("result")
            .ok_or_else(|| EtcdError::Protocol(format!("watch message without result: {value}")))?;
        let revision = header_revision(result)?;
        if flag(result, "canceled") {
            return Ok(WatchMessage::Cancelled {
                compact_revision: int_field(result, "compact_revision")?,
            });
        }
        if flag(result, "created") {
            return Ok(WatchMessage::Created { revision });
        }
        let mut events = Vec::new();
        if let Some(list) = result.get("events").and_then(Value::as_array) {
            for event in list {
                let kv = key_value(
                    event
                        .get("kv")
                        .ok_or_else(|| EtcdError::Protocol("event without kv".into()))?,
                )?;
                // The JSON gateway omits the default (PUT) type.
                match event.get("type").and_then(Value::as_str) {
                    Some("DELETE") => events.push(Event::Delete {
                        key: kv.key,
                        revision: kv.mod_revision,
                    }),
                    _ => events.push(Event::Put(kv)),
                }
            }
        }
        Ok(WatchMessage::Events { revision, events })
    }
}

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Bound on one request to one member (connect, send, answer).
    pub request_timeout: Duration,
    /// Bound on a watch stream's silence before it is given up.
    pub watch_idle: Duration,
}

/// A blocking etcd v3 client; `&self` methods, safe to share between
/// threads (connections are pooled per member).
pub struct Client {
    agent: ureq::Agent,
    watch_agent: ureq::Agent,
    endpoints: Vec<String>,
    current: AtomicUsize,
}

/// Resolves member addresses written as `IP:port` without a lookup, and
/// hands host names to ureq's default resolver. That one, given a
/// timeout, starts a thread for every request to look the host up, even
/// when a pooled connection then carries the request: a thread per etcd
/// round trip. (`ureq::unversioned` is ureq's API for this; Cargo.lock
/// pins the version it was written against.)
#[derive(Debug, Default)]
struct Literal(DefaultResolver);

impl Resolver for Literal {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        match uri.authority().map(|a| a.as_str().parse::<SocketAddr>()) {
            Some(Ok(addr)) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}

/// An agent with `config` that resolves through [`Literal`].
fn agent(config: ureq::config::Config) -> ureq::Agent {
    ureq::Agent::with_parts(config, DefaultConnector::default(), Literal::default())
}

impl Client {
    /// A client of the given members. Nothing is sent yet.
    pub fn new(config: &ClientConfig) -> Client {
        let agent = agent(
            ureq::Agent::config_builder()
                .timeout_global(Some(config.request_timeout))
                .http_status_as_error(false)
                .build(),
        );
        let watch_agent = self::agent(
            ureq::Agent::config_builder()
                .timeout_connect(Some(config.request_timeout))
                .timeout_recv_response(Some(config.request_timeout))
                .timeout_per_read(Some(config.watch_idle))
                .http_status_as_error(false)
                .build(),
        );
        Client {
            agent,
            watch_agent,
            endpoints: config.endpoints.clone(),
            current: AtomicUsize::new(0),
        }
    }

    /// The members this client talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sends `body` to `path` on the current member, failing over to the
    /// others; returns the JSON answer.
    fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let text = body.to_string();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no endpoints");
        for step in 0..self.endpoints.len() {
            let i = (start + step) % self.endpoints.len();
            let url = format!("http://{}{}", self.endpoints[i], path);
            match self.agent.post(&url).send(&text) {
                Ok(mut reply) => {
                    let status = reply.status().as_u16();
                    let answer: Value = match reply
                        .body_mut()
                        .read_to_string()
                        .map_err(|e| e.to_string())
                        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                    {
                        Ok(v) => v,
                        Err(e) => {
                            last = format!("{}: {e}", self.endpoints[i]);
                            continue;
                        }
                    };
                    if status == 200 {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    let error = status_error(&answer);
                    // 14 = Unavailable: no leader, or the member is stopping.
                    if matches!(error, EtcdError::Status { code: 14, .. }) || status >= 500 {
                        last = format!("{}: {error}", self.endpoints[i]);
                        continue;
                    }
                    return Err(error);
                }
                Err(e) => last = format!("{}: {e}", self.endpoints[i]),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoints.clone(),
            last,
        })
    }

    /// Reads a range.
    ///
    /// # Errors
    /// See [`EtcdError`].
    pub fn range(&self, range: &Range) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let answer = self.call("/v3/kv/range", &range_json(range))?;
        let (kvs, _) = range_result(&answer)?;
        Ok((header_revision(&answer)?, kvs))
    }

    /// Reads a range as it was at `revision` (etcd's history).
    ///
    /// # Errors
    /// See [`EtcdError`]; a compacted revision fails with etcd's status.
    pub fn range_at(&self, range: &Range, revision: i64) -> Result<Vec<KeyValue>, EtcdError> {
        let mut body = range_json(range);
        if let Value::Object(fields) = &mut body {
            fields.insert("revision".into(), json!(revision.to_string()));
        }
        let answer = self.call("/v3/kv/range", &body)?;
        Ok(range_result(&answer)?.0)
    }

    /// Writes `key` on `lease` (0: none); returns the write's revision.
    ///
    /// # Errors
    /// See [`EtcdError`]; a put on an expired lease fails as not found.
    pub fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/kv/put", &put_json(key, value, lease))?;
        header_revision(&answer)
    }

    /// Deletes `key`, or `[key, range_end)`; returns how many went.
    ///
    /// # Errors
    /// See [`EtcdError`].
    pub fn delete(&self, key: &[u8], range_end: Option<&[u8]>) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/kv/deleterange", &delete_json(key, range_end))?;
        int_field(&answer, "deleted")
    }

    /// Runs a transaction: if every compare holds, `success`, else `failure`.
    ///
    /// # Errors
    /// See [`EtcdError`].
    pub fn txn(
        &self,
        compares: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnResult, EtcdError> {
        let body = txn_json(compares, success, failure);
        let answer = self.call("/v3/kv/txn", &body)?;
        txn_result(&answer, header_revision(&answer)?)
    }

    /// Runs several transactions as one: each is nested in an outer
    /// transaction without compares (etcd 3.3 and later), so each keeps its
    /// own compares and branches, and all of them are applied at one
    /// revision, atomically, in one round trip. Each compare sees the
    /// store as it was before the outer transaction; each read sees the
    /// writes of the transactions before it. etcd refuses the whole
    /// request when two of them write the same key.
    ///
    /// # Errors
    /// See [`EtcdError`]: every transaction failed alike.
    pub fn txns(&self, txns: &[Txn]) -> Result<Vec<TxnResult>, EtcdError> {
        if let [one] = txns {
            return Ok(vec![self.txn(&one.compares, &one.success, &one.failure)?]);
        }
        let nested: Vec<Value> = txns
            .iter()
            .map(|t| json!({ "request_txn": txn_json(&t.compares, &t.success, &t.failure) }))
            .collect();
        let answer = self.call(
            "/v3/kv/txn",
            &json!({ "compare": [], "success": nested, "failure": [] }),
        )?;
        let revision = header_revision(&answer)?;
        let list = answer
            .get("responses")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if list.len() != txns.len() {
            return Err(EtcdError::Protocol(format!(
                "{} answers to {} nested transactions",
                list.len(),
                txns.len()
            )));
        }
        list.iter()
            .map(|r| {
                let inner = r
                    .get("response_txn")
                    .ok_or_else(|| EtcdError::Protocol(format!("nested txn response: {r}")))?;
                txn_result(inner, revision)
            })
            .collect()
    }

    /// Grants a lease of `ttl` seconds; returns its id and granted TTL.
    ///
    /// # Errors
    /// See [`EtcdError`].
    pub fn lease_grant(&self, ttl: i64) -> Result<(i64, i64), EtcdError> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl }))?;
        if let Some(error) = answer.get("error").and_then(Value::as_str) {
            if !error.is_empty() {
                return Err(EtcdError::Status {
                    code: 0,
                    message: error.to_string(),
                });
            }
        }
        Ok((int_field(&answer, "ID")?, int_field(&answer, "TTL")?))
    }

    /// Renews a lease once; returns the TTL it now has (counted from when
    /// etcd's leader handled it). A lease that expired or was revoked
    /// fails as not found.
    ///
    /// # Errors
    /// See [`EtcdError`].
    pub fn lease_keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/lease/keepalive", &json!({ "ID": id }))?;
        let result = answer
            .get("result")
            .ok_or_else(|| EtcdError::Protocol(format!("keepalive: {answer}")))?;
        let ttl = int_field(result, "TTL")?;
        if ttl <= 0 {
            return Err(EtcdError::Status {
                code: 5,
                message: "lease expired".into(),
            });
        }
        Ok(ttl)
    }

    /// Revokes a lease: every key on it is deleted at once.
    ///
    /// # Errors
    /// See [`EtcdError`].
    pub fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": id }))
            .map(|_| ())
    }

    /// Starts a watch of every key starting with `prefix`, from `revision`
    /// (0: from now). Read it with [`Watch::next_message`].
    ///
    /// # Errors
    /// See [`EtcdError`].
    pub fn watch_prefix(&self, prefix: &[u8], revision: i64) -> Result<Watch, EtcdError> {
        let mut create = Map::new();
        create.insert("key".into(), b64(prefix));
        create.insert("range_end".into(), b64(&prefix_end(prefix)));
        if revision > 0 {
            create.insert("start_revision".into(), json!(revision.to_string()));
        }
        let body = json!({ "create_request": Value::Object(create) }).to_string();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no endpoints");
        for step in 0..self.endpoints.len() {
            let i = (start + step) % self.endpoints.len();
            let url = format!("http://{}/v3/watch", self.endpoints[i]);
            match self.watch_agent.post(&url).send(&body) {
                Ok(reply) if reply.status().as_u16() == 200 => {
                    let reader = WatchBody(reply.into_body().into_reader());
                    return Ok(Watch {
                        stream: serde_json::Deserializer::from_reader(reader).into_iter(),
                    });
                }
                Ok(reply) => last = format!("{}: HTTP {}", self.endpoints[i], reply.status()),
                Err(e) => last = format!("{}: {e}", self.endpoints[i]),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoints.clone(),
            last,
        })
    }
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xFF (or empty): the whole key space, as etcd spells it.
    vec![0]
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(B64.encode(bytes))
}

fn unb64(value: Option<&Value>) -> Result<Vec<u8>, EtcdError> {
    match value.and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(text) => B64
            .decode(text)
            .map_err(|e| EtcdError::Protocol(format!("bad base64: {e}"))),
    }
}

/// An int64 field: etcd's gateway writes them as strings, omits zeros.
fn int_field(object: &Value, name: &str) -> Result<i64, EtcdError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| EtcdError::Protocol(format!("{name}: {n}"))),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| EtcdError::Protocol(format!("{name}: {s:?}"))),
        Some(other) => Err(EtcdError::Protocol(format!("{name}: {other}"))),
    }
}

fn flag(object: &Value, name: &str) -> bool {
    object.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn header_revision(answer: &Value) -> Result<i64, EtcdError> {
    let header = answer
        .get("header")
        .ok_or_else(|| EtcdError::Protocol(format!("no header in {answer}")))?;
    int_field(header, "revision")
}

fn status_error(answer: &Value) -> EtcdError {
    let message = answer
        .get("message")
        .or_else(|| answer.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("unknown error")
        .to_string();
    EtcdError::Status {
        code: int_field(answer, "code").unwrap_or(0),
        message,
    }
}

fn key_value(kv: &Value) -> Result<KeyValue, EtcdError> {
    Ok(KeyValue {
        key: unb64(kv.get("key"))?,
        value: unb64(kv.get("value"))?,
        create_revision: int_field(kv, "create_revision")?,
        mod_revision: int_field(kv, "mod_revision")?,
        lease: int_field(kv, "lease")?,
    })
}

fn range_result(answer: &Value) -> Result<(Vec<KeyValue>, i64), EtcdError> {
    let mut kvs = Vec::new();
    if let Some(list) = answer.get("kvs").and_then(Value::as_array) {
        for kv in list {
            kvs.push(key_value(kv)?);
        }
    }
    Ok((kvs, int_field(answer, "count")?))
}

fn range_json(range: &Range) -> Value {
    let mut r = Map::new();
    r.insert("key".into(), b64(&range.key));
    if let Some(end) = &range.range_end {
        r.insert("range_end".into(), b64(end));
    }
    if range.limit > 0 {
        r.insert("limit".into(), json!(range.limit.to_string()));
    }
    let target = match range.order {
        Order::Key => None,
        Order::Created => Some("CREATE"),
        Order::Modified => Some("MOD"),
    };
    if let Some(target) = target {
        r.insert("sort_order".into(), json!("ASCEND"));
        r.insert("sort_target".into(), json!(target));
    }
    Value::Object(r)
}

fn put_json(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut p = Map::new();
    p.insert("key".into(), b64(key));
    p.insert("value".into(), b64(value));
    if lease != 0 {
        p.insert("lease".into(), json!(lease.to_string()));
    }
    Value::Object(p)
}

fn delete_json(key: &[u8], range_end: Option<&[u8]>) -> Value {
    let mut d = Map::new();
    d.insert("key".into(), b64(key));
    if let Some(end) = range_end {
        d.insert("range_end".into(), b64(end));
    }
    Value::Object(d)
}

fn txn_json(compares: &[Compare], success: &[Op], failure: &[Op]) -> Value {
    json!({
        "compare": compares.iter().map(compare_json).collect::<Vec<_>>(),
        "success": success.iter().map(op_json).collect::<Vec<_>>(),
        "failure": failure.iter().map(op_json).collect::<Vec<_>>(),
    })
}

/// The answer to one transaction, at the outer transaction's `revision`.
fn txn_result(answer: &Value, revision: i64) -> Result<TxnResult, EtcdError> {
    let succeeded = flag(answer, "succeeded");
    let mut results = Vec::new();
    if let Some(list) = answer.get("responses").and_then(Value::as_array) {
        for r in list {
            if let Some(range) = r.get("response_range") {
                let (kvs, count) = range_result(range)?;
                results.push(OpResult::Range { kvs, count });
            } else if r.get("response_put").is_some() {
                results.push(OpResult::Put);
            } else if let Some(d) = r.get("response_delete_range") {
                results.push(OpResult::Delete {
                    deleted: int_field(d, "deleted")?,
                });
            } else {
                return Err(EtcdError::Protocol(format!("txn response: {r}")));
            }
        }
    }
    Ok(TxnResult {
        succeeded,
        revision,
        results,
        slot: 0,
    })
}

fn compare_json(c: &Compare) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), b64(&c.key));
    if let Some(end) = &c.range_end {
        m.insert("range_end".into(), b64(end));
    }
    let relation = match c.relation {
        Relation::Equal => "EQUAL",
        Relation::Greater => "GREATER",
        Relation::Less => "LESS",
    };
    m.insert("result".into(), json!(relation));
    match c.target {
        Target::CreateRevision(n) => {
            m.insert("target".into(), json!("CREATE"));
            m.insert("create_revision".into(), json!(n.to_string()));
        }
        Target::ModRevision(n) => {
            m.insert("target".into(), json!("MOD"));
            m.insert("mod_revision".into(), json!(n.to_string()));
        }
    }
    Value::Object(m)
}

fn op_json(op: &Op) -> Value {
    match op {
        Op::Range(range) => json!({ "request_range": range_json(range) }),
        Op::Put { key, value, lease } => json!({ "request_put": put_json(key, value, *lease) }),
        Op::Delete { key, range_end } => {
            json!({ "request_delete_range": delete_json(key, range_end.as_deref()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_counts_up_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/lockd/x/"), b"/lockd/x0".to_vec());
        assert_eq!(prefix_end(b"a\xFF"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xFF\xFF"), vec![0]);
    }

    #[test]
    fn int64_fields_come_as_strings_numbers_or_not_at_all() {
        let v = json!({"a": "12", "b": 7, "c": "x"});
        assert_eq!(int_field(&v, "a").ok(), Some(12));
        assert_eq!(int_field(&v, "b").ok(), Some(7));
        assert_eq!(int_field(&v, "zero").ok(), Some(0));
        assert!(int_field(&v, "c").is_err());
    }
}
