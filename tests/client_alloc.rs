//! Allocations per `lockd::Client` call, counted by a global allocator on
//! the calling thread only (the in-process server's threads are not
//! counted). Issue 16's budget is at most two per call; the figures are
//! printed (`cargo test --test client_alloc -- --nocapture`).

mod common;

use common::TestServer;
use lockd::Client;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed straight to the system allocator; the
// counting only touches const-initialised thread locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as the caller promised for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as the caller promised.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread, per run, over `runs` runs.
fn per_run(runs: u64, mut f: impl FnMut()) -> f64 {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    for _ in 0..runs {
        f();
    }
    COUNTING.with(|on| on.set(false));
    COUNT.with(Cell::get) as f64 / runs as f64
}

#[test]
fn a_call_allocates_at_most_twice() {
    let server = TestServer::start();
    let client = Client::connect(server.addr.to_string()).expect("connect");
    // Warm up: buffers and the holds table reach their size.
    for _ in 0..100 {
        drop(client.lock("alloc").expect("lock"));
    }
    let runs = 2000;
    // `lock` and the guard's drop: two calls.
    let cycle = per_run(runs, || drop(client.lock("alloc").expect("lock")));
    let try_cycle = per_run(runs, || drop(client.try_lock("alloc").expect("try")));
    let is_locked = per_run(runs, || {
        client.is_locked("alloc").expect("i");
    });
    let ping = per_run(runs, || {
        client.ping().expect("ping");
    });
    println!(
        "allocations: lock + drop {cycle:.2} per pair ({:.2} per call), try_lock + drop {try_cycle:.2} per pair, is_locked {is_locked:.2}, ping {ping:.2}",
        cycle / 2.0
    );
    assert!(
        cycle <= 4.0,
        "lock + drop: {cycle} allocations for two calls"
    );
    assert!(try_cycle <= 4.0, "try_lock + drop: {try_cycle}");
    assert!(is_locked <= 2.0, "is_locked: {is_locked}");
    assert!(ping <= 2.0, "ping: {ping}");
}
