//! The commands that look at a server: `status`, `locks`, `clients`,
//! `stats`, `ping`; each prints columns for people or, with `--json`, one
//! JSON document built with serde_json.

use crate::connect::exit;
use lockd::protocol::normalize;
use lockd::{Client, Error};
use serde_json::{json, Map, Value};
use std::io::Write;

/// One lock as `status` and `locks` show it.
#[derive(Debug, Default)]
struct LockView {
    /// `exclusive`, `read` or `shared`.
    kind: &'static str,
    name: String,
    holders: Vec<String>,
    token: Option<u64>,
    waiters: Vec<String>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Prints rows as columns two spaces apart (the last column unpadded).
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

fn print_json(value: &Value) {
    println!("{value}");
}

/// The server's `dj` object (protocol 2).
fn dump_json(client: &Client) -> Result<Value, Error> {
    let line = client.dump_json()?;
    serde_json::from_slice(&line).map_err(|e| Error::Protocol {
        command: "dj".into(),
        reply: format!("{e}: {}", lossy(&line)),
    })
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn members(dj: &Value, key: &str) -> Vec<(String, Value)> {
    dj.get(key)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Every lock in a `dj` object.
fn views_of_dj(dj: &Value) -> Vec<LockView> {
    let mut views = Vec::new();
    for (name, lock) in members(dj, "exclusive") {
        let holder = lock.get("holder").and_then(Value::as_str).unwrap_or("?");
        let holder = match lock.get("name").and_then(Value::as_str) {
            Some(registered) => format!("{holder} ({registered})"),
            None => holder.to_string(),
        };
        views.push(LockView {
            kind: "exclusive",
            name,
            holders: vec![holder],
            token: lock.get("token").and_then(Value::as_u64),
            waiters: strings(lock.get("waiters")),
        });
    }
    for (name, lock) in members(dj, "readers") {
        views.push(LockView {
            kind: "read",
            name,
            holders: strings(lock.get("holders")),
            token: None,
            waiters: strings(lock.get("waiters")),
        });
    }
    for (name, lock) in members(dj, "shared") {
        let waiters = lock
            .get("waiters")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|w| {
                let client = w.get("client").and_then(Value::as_str).unwrap_or("?");
                match w.get("limit").and_then(Value::as_u64) {
                    Some(limit) if limit > 0 => format!("{client} (limit {limit})"),
                    _ => client.to_string(),
                }
            })
            .collect();
        views.push(LockView {
            kind: "shared",
            name,
            holders: strings(lock.get("holders")),
            token: None,
            waiters,
        });
    }
    views
}

/// Every lock, from `dj` on protocol 2, else from `d` and `sd` (no
/// tokens, no waiters, no read holds).
fn lock_views(client: &Client) -> Result<Vec<LockView>, Error> {
    let mut views = if client.protocol() >= 2 {
        views_of_dj(&dump_json(client)?)
    } else {
        let mut views = Vec::new();
        for (name, holder) in client.holders()? {
            views.push(LockView {
                kind: "exclusive",
                name: lossy(name.as_bytes()),
                holders: vec![lossy(holder.as_bytes())],
                ..LockView::default()
            });
        }
        for (name, holders) in client.shared_holders()? {
            views.push(LockView {
                kind: "shared",
                name: lossy(name.as_bytes()),
                holders: holders.iter().map(|h| lossy(h.as_bytes())).collect(),
                ..LockView::default()
            });
        }
        views
    };
    views.sort_by(|a, b| (a.name.as_str(), a.kind).cmp(&(b.name.as_str(), b.kind)));
    Ok(views)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// `status NAME`: 0 when held (by a writer, readers or semaphore
/// holders), 1 when free, like `test`.
pub fn status(client: &Client, name: &str, as_json: bool) -> Result<u8, Error> {
    let wanted = lossy(&normalize(name.as_bytes()));
    let views = match lock_views(client) {
        Ok(views) => views,
        // Dump is off: say what `i` and `si` can.
        Err(e) if e.is_disabled() => {
            let held = client.is_locked(&wanted)?;
            let shared = client.shared_count(&wanted)?;
            if as_json {
                print_json(&json!({
                    "name": wanted,
                    "held": held || shared > 0,
                    "locked": held,
                    "shared_holders": shared,
                    "detail": "the server's dump is off: no holders, tokens or waiters",
                }));
            } else {
                println!(
                    "lock {wanted:?}: {}",
                    if held || shared > 0 { "held" } else { "free" }
                );
                println!(
                    "exclusive or read: {}",
                    if held {
                        "held (who: hidden, the server's dump is off)"
                    } else {
                        "free"
                    }
                );
                println!("shared: {shared} holders");
            }
            return Ok(if held || shared > 0 { 0 } else { 1 });
        }
        Err(e) => return Err(e),
    };
    let find = |kind| views.iter().find(|v| v.kind == kind && v.name == wanted);
    let (exclusive, read, shared) = (find("exclusive"), find("read"), find("shared"));
    let held = exclusive.is_some() || read.is_some() || shared.is_some();
    if as_json {
        let part = |view: Option<&LockView>| match view {
            None => Value::Null,
            Some(v) => {
                let mut object = Map::new();
                object.insert("holders".into(), json!(v.holders));
                if v.kind == "exclusive" {
                    object.insert("token".into(), json!(v.token));
                }
                object.insert("waiters".into(), json!(v.waiters));
                Value::Object(object)
            }
        };
        print_json(&json!({
            "name": wanted,
            "held": held,
            "exclusive": part(exclusive),
            "read": part(read),
            "shared": part(shared),
            "since": null,
        }));
        return Ok(if held { 0 } else { 1 });
    }
    println!("lock {wanted:?}: {}", if held { "held" } else { "free" });
    match exclusive {
        Some(v) => {
            let token = v.token.map(|t| format!(", token {t}")).unwrap_or_default();
            println!("exclusive: held by {}{token}", list(&v.holders));
            if !v.waiters.is_empty() {
                println!("  waiters: {}", list(&v.waiters));
            }
        }
        None if read.is_some() => println!("exclusive: no writer (read-held)"),
        None => println!("exclusive: free"),
    }
    if let Some(v) = read {
        println!("read: {} readers: {}", v.holders.len(), list(&v.holders));
        if !v.waiters.is_empty() {
            println!("  waiters: {}", list(&v.waiters));
        }
    }
    match shared {
        Some(v) => {
            println!("shared: {} holders: {}", v.holders.len(), list(&v.holders));
            if !v.waiters.is_empty() {
                println!("  waiters: {}", list(&v.waiters));
            }
        }
        None => println!("shared: free"),
    }
    if held {
        println!("since: unknown (the server's dump gives holders, tokens and waiters, not times)");
    }
    Ok(if held { 0 } else { 1 })
}

/// `locks`: every lock; `--json` is the server's `dj` object (on a
/// classic server, the same shape built from `d` and `sd`).
pub fn locks(client: &Client, as_json: bool) -> Result<u8, Error> {
    if as_json && client.protocol() >= 2 {
        print_json(&dump_json(client)?);
        return Ok(0);
    }
    let views = lock_views(client)?;
    if as_json {
        let mut exclusive = Map::new();
        let mut shared = Map::new();
        for v in views {
            if v.kind == "exclusive" {
                exclusive.insert(
                    v.name,
                    json!({"holder": v.holders.concat(), "name": null, "token": null, "waiters": []}),
                );
            } else {
                shared.insert(v.name, json!({"holders": v.holders, "waiters": []}));
            }
        }
        print_json(&json!({"exclusive": exclusive, "shared": shared}));
        return Ok(0);
    }
    let mut rows = vec![vec![
        "TYPE".to_string(),
        "NAME".into(),
        "HOLDERS".into(),
        "TOKEN".into(),
        "WAITERS".into(),
    ]];
    for v in views {
        rows.push(vec![
            v.kind.to_string(),
            v.name,
            list(&v.holders),
            v.token.map_or("-".into(), |t| t.to_string()),
            list(&v.waiters),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

/// `clients`: connections with a registered name.
pub fn clients(client: &Client, as_json: bool) -> Result<u8, Error> {
    let registered = client.registrations()?;
    if as_json {
        let list: Vec<Value> = registered
            .iter()
            .map(|r| {
                json!({"connection": lossy(r.default.as_bytes()), "name": lossy(r.name.as_bytes())})
            })
            .collect();
        print_json(&Value::Array(list));
        return Ok(0);
    }
    let mut rows = vec![vec!["CONNECTION".to_string(), "NAME".into()]];
    for r in registered {
        rows.push(vec![lossy(r.default.as_bytes()), lossy(r.name.as_bytes())]);
    }
    print_table(&rows);
    Ok(0)
}

/// `stats`: the server's counters.
pub fn stats(client: &Client, as_json: bool) -> Result<u8, Error> {
    let stats = client.stats()?;
    if as_json {
        let object: Map<String, Value> = stats
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        print_json(&Value::Object(object));
    } else {
        let rows: Vec<Vec<String>> = stats
            .iter()
            .map(|(k, v)| vec![k.to_string(), v.to_string()])
            .collect();
        print_table(&rows);
    }
    Ok(0)
}

/// `ping`: the round trip.
pub fn ping(client: &Client, server: &str, as_json: bool) -> Result<u8, Error> {
    let rtt = if client.protocol() >= 2 {
        client.ping()?
    } else {
        // A classic server has no ping; `me` is as cheap.
        let start = std::time::Instant::now();
        client.identity()?;
        start.elapsed()
    };
    let ms = rtt.as_secs_f64() * 1000.0;
    if as_json {
        print_json(&json!({"server": server, "ms": ms, "protocol": client.protocol()}));
    } else {
        println!(
            "pong from {server}: time={ms:.3} ms (protocol {})",
            client.protocol()
        );
    }
    Ok(0)
}

/// The exit status for an error of these commands.
pub fn failed(e: &Error, server: &str) -> u8 {
    eprintln!("lockctl: {}", crate::connect::explain(server, e));
    exit::UNAVAILABLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dj_with_readers_becomes_views() {
        let dj: Value = serde_json::from_str(
            r#"{"exclusive":{"a":{"holder":"h:1","name":"job","token":7,"waiters":["w:2"]}},
                "shared":{"s":{"holders":["h:1","h:3"],"waiters":[{"client":"w:4","limit":2}]}},
                "readers":{"r":{"holders":["h:5","h:6"],"waiters":["w:7"]}}}"#,
        )
        .unwrap();
        let views = views_of_dj(&dj);
        assert_eq!(views.len(), 3);
        assert_eq!(views[0].kind, "exclusive");
        assert_eq!(views[0].holders, vec!["h:1 (job)".to_string()]);
        assert_eq!(views[0].token, Some(7));
        assert_eq!(views[1].kind, "read");
        assert_eq!(views[1].holders.len(), 2);
        assert_eq!(views[1].waiters, vec!["w:7".to_string()]);
        assert_eq!(views[2].waiters, vec!["w:4 (limit 2)".to_string()]);
    }
}
