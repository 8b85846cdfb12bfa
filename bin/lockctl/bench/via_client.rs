//! W1 and W2 driven through `lockd::Client` itself: each connection is a
//! `Client`, and an op is `lock` (a `wg`) or the guard's drop (an `r`), so
//! the row beside the raw generator's shows what the client library costs.

use super::{allowed_cpus, drive, Ctx, Measure};
use crate::bench::hist::Histogram;
use crate::bench::BenchError;
use lockd::Client;
use std::time::Instant;

/// A reply that makes no sense fails the check, as in the raw generator;
/// anything else stops the benchmark.
fn failed(ctx: &Ctx<'_>, e: lockd::Error) -> BenchError {
    match e {
        lockd::Error::Protocol { .. } => ctx.fail(e.to_string()),
        e => BenchError::io(
            format!(
                "{} through lockd::Client against {}",
                ctx.workload, ctx.addr
            ),
            std::io::Error::other(e),
        ),
    }
}

/// `lock(NAME)` then drop the guard, on `n` clients with a name each;
/// checks that every grant's fencing token is above the last.
pub(super) fn lock_release(ctx: &Ctx<'_>, n: usize) -> Result<Measure, BenchError> {
    let clients = (0..n)
        .map(|i| {
            let client = Client::connect(ctx.addr.to_string()).map_err(|e| failed(ctx, e))?;
            Ok((client, format!("bench-client-{}-{i}", ctx.workload)))
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let (ops, hist, elapsed) = drive(
        ctx,
        clients,
        |client, name, hist: &mut Histogram, deadline| {
            let mut ops = 0;
            let mut last_token = 0;
            let mut now = Instant::now();
            while now < deadline {
                let guard = client.lock(name.as_str()).map_err(|e| failed(ctx, e))?;
                let then = Instant::now();
                hist.record(then - now);
                now = then;
                let token = guard.token().unwrap_or(0);
                if token <= last_token {
                    return Err(ctx.fail(format!(
                        "fencing token {token} after {last_token} on {name}"
                    )));
                }
                last_token = token;
                drop(guard);
                let then = Instant::now();
                hist.record(then - now);
                now = then;
                ops += 2;
            }
            Ok(ops)
        },
    )?;
    let notes = if n == 1 {
        format!(
            "lock + drop; not pinned (may run on CPUs {})",
            allowed_cpus()
        )
    } else {
        "lock + drop; ratio of the raw lockd row".to_string()
    };
    Ok(Measure::ops(ops, elapsed, n, hist, notes))
}
