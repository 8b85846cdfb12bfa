//! The node's etcd lease and the safety rule that goes with it.
//!
//! Every key the node writes hangs on one lease. A keeper renews it about
//! every TTL/3. A keep-alive sent at instant `s` and answered with TTL `t`
//! proves the lease lives until at least `s + t` (etcd counts the TTL from
//! when it handled the request, after `s`). The node may vouch for its
//! clients' locks only until `s + t - margin`: a guard thread declares the
//! lease lost at that instant unless a newer proof arrived, and the node
//! must then have closed its clients' connections. The keeper then asks
//! for a fresh lease (a new epoch); keys of the old lease are never
//! written again.

use super::client::{Client, EtcdError};
use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How soon a failed keep-alive is retried.
const RETRY: Duration = Duration::from_millis(200);

/// The lease, its proof of life, and whether the node may serve.
pub struct Lease {
    state: Mutex<State>,
    changed: Condvar,
    ttl: Duration,
    margin: Duration,
}

struct State {
    /// The current lease; 0 while lost.
    id: i64,
    /// Grows with each lease granted.
    epoch: u64,
    /// The node vouches for its clients until this instant.
    vouch_until: Option<Instant>,
    /// A lease lost and not yet revoked (best effort, at the next grant).
    stale: Option<i64>,
    stopping: bool,
}

impl Lease {
    /// Grants the first lease of `ttl` (whole seconds, at least 2); the
    /// node may serve once this returns.
    ///
    /// # Errors
    /// etcd did not grant it.
    pub fn grant(client: &Client, ttl: Duration) -> Result<Lease, EtcdError> {
        let lease = Lease {
            state: Mutex::new(State {
                id: 0,
                epoch: 0,
                vouch_until: None,
                stale: None,
                stopping: false,
            }),
            changed: Condvar::new(),
            ttl,
            margin: margin(ttl),
        };
        lease.renew(client)?;
        Ok(lease)
    }

    /// The current lease and its epoch, or `None` while lost.
    pub fn current(&self) -> Option<(i64, u64)> {
        let state = self.state.lock();
        (state.id != 0).then_some((state.id, state.epoch))
    }

    /// Whether `epoch` is still the live one.
    pub fn is_live(&self, epoch: u64) -> bool {
        let state = self.state.lock();
        state.id != 0 && state.epoch == epoch
    }

    /// Until when the node vouches for its clients' locks, if it does.
    pub fn vouch_until(&self) -> Option<Instant> {
        self.state.lock().vouch_until
    }

    /// How long before the proven expiry the node gives up its clients.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// Stops [`Lease::keep`] and [`Lease::guard`] and gives the lease up;
    /// returns it (to revoke), if one was live.
    pub fn stop(&self) -> Option<i64> {
        let mut state = self.state.lock();
        state.stopping = true;
        state.vouch_until = None;
        self.changed.notify_all();
        let id = std::mem::take(&mut state.id);
        (id != 0).then_some(id)
    }

    /// Grants a fresh lease (a new epoch) and revokes a stale one.
    fn renew(&self, client: &Client) -> Result<(), EtcdError> {
        let secs = self.ttl.as_secs().max(2) as i64;
        let sent = Instant::now();
        let (id, granted) = client.lease_grant(secs)?;
        let stale = {
            let mut state = self.state.lock();
            state.id = id;
            state.epoch += 1;
            state.vouch_until = proof(sent, granted, self.margin);
            self.changed.notify_all();
            state.stale.take()
        };
        if let Some(old) = stale {
            // Frees the old keys at once if etcd still has them; they
            // expire by themselves otherwise.
            let _ = client.lease_revoke(old);
        }
        Ok(())
    }

    /// Declares `epoch` lost (if it is still current); returns whether it
    /// was.
    fn lose(&self, epoch: u64) -> bool {
        let mut state = self.state.lock();
        if state.id == 0 || state.epoch != epoch {
            return false;
        }
        state.stale = Some(state.id);
        state.id = 0;
        state.vouch_until = None;
        self.changed.notify_all();
        true
    }

    /// The keeper: renews the lease about every TTL/3, and after a loss
    /// asks for a fresh one until etcd grants it. Calls `lost(epoch)` when
    /// etcd says the lease is gone. Returns once stopped.
    pub fn keep(&self, client: &Client, lost: &dyn Fn(u64)) {
        let mut next = Instant::now() + self.ttl / 3;
        loop {
            let current = {
                let mut state = self.state.lock();
                if state.stopping {
                    return;
                }
                if state.id != 0 && Instant::now() < next {
                    self.changed.wait_until(&mut state, next);
                    continue;
                }
                (state.id, state.epoch)
            };
            match current {
                (0, _) => match self.renew(client) {
                    Ok(()) => next = Instant::now() + self.ttl / 3,
                    Err(_) => self.pause(RETRY),
                },
                (id, epoch) => {
                    let sent = Instant::now();
                    match client.lease_keep_alive(id) {
                        Ok(ttl) => {
                            let mut state = self.state.lock();
                            if state.id == id {
                                let proven = proof(sent, ttl, self.margin);
                                state.vouch_until = state.vouch_until.max(proven);
                            }
                            next = sent + self.ttl / 3;
                        }
                        Err(e) if e.is_not_found() => {
                            if self.lose(epoch) {
                                lost(epoch);
                            }
                        }
                        Err(_) => next = Instant::now() + RETRY,
                    }
                }
            }
        }
    }

    /// The guard: declares the lease lost when the node can no longer
    /// vouch for it, and calls `lost(epoch)`. Returns once stopped.
    pub fn guard(&self, lost: &dyn Fn(u64)) {
        let mut state = self.state.lock();
        loop {
            if state.stopping {
                return;
            }
            match state.vouch_until {
                Some(until) if Instant::now() >= until => {
                    let epoch = state.epoch;
                    drop(state);
                    if self.lose(epoch) {
                        lost(epoch);
                    }
                    state = self.state.lock();
                }
                Some(until) => {
                    self.changed.wait_until(&mut state, until);
                }
                None => self.changed.wait(&mut state),
            }
        }
    }

    fn pause(&self, pause: Duration) {
        let mut state = self.state.lock();
        if !state.stopping {
            self.changed.wait_for(&mut state, pause);
        }
    }
}

/// The margin kept before a proven expiry: a fifth of the TTL, so with the
/// default 5 s a node gives up its clients a second before etcd could.
pub fn margin(ttl: Duration) -> Duration {
    ttl / 5
}

fn proof(sent: Instant, ttl_secs: i64, margin: Duration) -> Option<Instant> {
    let ttl = Duration::from_secs(u64::try_from(ttl_secs).ok()?);
    sent.checked_add(ttl)?.checked_sub(margin)
}
