//! The gateway's own accept loop (`listener::serve`) must cost a request no more heap
//! allocations than axum's server it replaced: the hot path is sacred. Both serve the same
//! router to the same keep-alive client on one current-thread runtime, under a counting
//! allocator, so the counts are exact.

// The counting allocator below is the one exception: it forwards every call to `System`
// unchanged, with the caller's own arguments, so it is exactly as sound as `System`.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use router_one_server::listener::{self, EdgeConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the arguments it was given; counting touches
// only an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Routes shaped like the gateway's: a path parameter, a body read in full, a body limit.
fn app() -> Router {
    Router::new()
        .route(
            "/v1/things/{id}",
            post(|body: bytes::Bytes| async move { body.len().to_string() }),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
}

/// Allocations per request (server and client) on one keep-alive connection, after a warm-up.
async fn allocations_per_request(addr: SocketAddr) -> u64 {
    const REQUESTS: u64 = 1000;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let request = b"POST /v1/things/7 HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}";
    let mut buf = vec![0u8; 4096];
    for round in 0..2 {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..REQUESTS {
            conn.write_all(request).await.unwrap();
            let n = conn.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        }
        if round == 1 {
            // Rounded down: a stray allocation elsewhere in the process (a date header refreshed
            // once a second) must not count as one per request; one per request would.
            return (ALLOCATIONS.load(Ordering::Relaxed) - before) / REQUESTS;
        }
    }
    unreachable!()
}

#[test]
fn the_accept_loop_costs_a_request_no_more_allocations_than_axum_serve() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let axum_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let axum_addr = axum_listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(axum_listener, app()).await.unwrap() });

        let ours = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours_addr = ours.local_addr().unwrap();
        let config = EdgeConfig {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 64,
            shutdown_timeout: Duration::from_secs(1),
            stopping: tokio_util::sync::CancellationToken::new(),
        };
        tokio::spawn(listener::serve(ours, app(), config, std::future::pending()));

        let theirs = allocations_per_request(axum_addr).await;
        let ours = allocations_per_request(ours_addr).await;
        assert!(
            ours <= theirs,
            "listener::serve: {ours} allocations per request, axum::serve: {theirs}"
        );
    });
}
