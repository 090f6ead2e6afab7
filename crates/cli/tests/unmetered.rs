//! `ROUTER_ONE_BENCH_UNMETERED=1` switches billing off only in a `bench-unmetered` build: a
//! normal build refuses to start with it (issue 10, item 12).

#![cfg(not(feature = "bench-unmetered"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_normal_build_refuses_to_serve_unmetered() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_router-one"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("ROUTER_ONE_BENCH_UNMETERED", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a build that serves unmetered would run until killed.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.is_some(), "it served with billing off; stderr:\n{stderr}");
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("ROUTER_ONE_BENCH_UNMETERED=1"), "{stderr}");
    assert!(stderr.contains("bench-unmetered"), "{stderr}");
    assert!(!data.path().join("demo.json").exists(), "refused before doing anything");
}
