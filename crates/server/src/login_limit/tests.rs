use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const NOW: i64 = 1_000_000;

#[test]
fn sixty_concurrent_guesses_verify_at_most_the_limit() {
    let limits = Arc::new(LoginLimits::default());
    let verified = Arc::new(AtomicU32::new(0));
    let start = Arc::new(Barrier::new(60));
    let threads: Vec<_> = (0..60)
        .map(|_| {
            let (limits, verified, start) = (limits.clone(), verified.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                match limits.begin("victim@x.io", ip("203.0.113.7"), NOW) {
                    Ok(attempt) => {
                        // The password check runs here; it takes a while, and fails.
                        verified.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        drop(attempt);
                        None
                    }
                    Err(refused) => Some(refused),
                }
            })
        })
        .collect();
    let refusals: Vec<ApiError> = threads.into_iter().filter_map(|t| t.join().unwrap()).collect();
    assert_eq!(
        verified.load(Ordering::SeqCst),
        PER_PAIR,
        "only the limit reached the password check"
    );
    assert_eq!(refusals.len(), 60 - PER_PAIR as usize);
    for r in &refusals {
        assert_eq!(r.kind, ErrorKind::RateLimited);
        assert_eq!(r.retry_after_s, Some(900));
    }
}

#[test]
fn a_guesser_from_one_address_cannot_lock_the_owner_out_from_another() {
    let limits = LoginLimits::default();
    let (attacker, owner) = (ip("203.0.113.7"), ip("198.51.100.9"));
    for _ in 0..PER_PAIR {
        drop(limits.begin("a@x.io", attacker, NOW).unwrap());
    }
    assert!(
        limits.begin("a@x.io", attacker, NOW + 1).is_err(),
        "the guesser is stopped"
    );
    limits
        .begin("a@x.io", owner, NOW + 1)
        .expect("the owner, elsewhere, is not")
        .succeeded(NOW + 1);
    assert!(
        limits.begin("a@x.io", attacker, NOW + 2).is_err(),
        "and the guesser stays stopped"
    );
    assert!(
        limits.begin("a@x.io", attacker, NOW + WINDOW_S).is_ok(),
        "until the window ends"
    );
}

#[test]
fn a_distributed_guesser_is_slowed_but_the_owners_usual_address_is_not() {
    let limits = LoginLimits::default();
    let home = ip("198.51.100.9");
    limits.begin("a@x.io", home, NOW).unwrap().succeeded(NOW);
    let guessers = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    for g in guessers {
        for _ in 0..PER_PAIR {
            drop(limits.begin("a@x.io", ip(g), NOW + 10).unwrap());
        }
    }
    let fourth = limits.begin("a@x.io", ip("203.0.113.4"), NOW + 11).unwrap_err();
    assert!(fourth.message.contains("for this email"), "{}", fourth.message);
    assert_eq!(
        fourth.retry_after_s,
        Some(889),
        "the email's window began with the owner's login"
    );
    limits
        .begin("a@x.io", home, NOW + 11)
        .expect("the owner's usual address is trusted")
        .succeeded(NOW + 11);
    assert!(
        limits.begin("b@x.io", ip("203.0.113.4"), NOW + 11).is_ok(),
        "other emails are not affected"
    );
}

#[test]
fn one_address_trying_many_emails_is_capped() {
    let limits = LoginLimits::default();
    let stuffer = ip("203.0.113.7");
    for n in 0..PER_SOURCE {
        drop(limits.begin(&format!("user{n}@x.io"), stuffer, NOW).unwrap());
    }
    let refused = limits.begin("another@x.io", stuffer, NOW).unwrap_err();
    assert!(refused.message.contains("from your address"), "{}", refused.message);
    assert!(limits.begin("another@x.io", ip("198.51.100.9"), NOW).is_ok());
}

#[test]
fn a_success_gives_its_attempt_back_and_forgives_its_own_failures() {
    let limits = LoginLimits::default();
    let me = ip("198.51.100.9");
    for _ in 0..PER_PAIR - 1 {
        drop(limits.begin("a@x.io", me, NOW).unwrap());
    }
    limits.begin("a@x.io", me, NOW).unwrap().succeeded(NOW);
    for _ in 0..PER_PAIR {
        drop(
            limits
                .begin("a@x.io", me, NOW + 1)
                .expect("a fresh allowance after signing in"),
        );
    }
    assert!(limits.begin("a@x.io", me, NOW + 1).is_err());
    let w = limits.windows.lock().unwrap();
    assert_eq!(
        w.by_source[&me].attempts,
        2 * PER_PAIR - 1,
        "the success is not counted"
    );
}

#[test]
fn the_maps_stay_bounded_and_a_flood_never_unlocks_a_locked_pair() {
    let limits = LoginLimits::with_capacity(4);
    let attacker = ip("203.0.113.7");
    for _ in 0..PER_PAIR {
        drop(limits.begin("a@x.io", attacker, NOW).unwrap());
    }
    // Three more sources, one failure each, fill the maps.
    for n in 1..=3u8 {
        drop(
            limits
                .begin(&format!("u{n}@x.io"), IpAddr::from([10, 0, 0, n]), NOW)
                .unwrap(),
        );
    }
    // A fifth makes room by dropping unlocked windows, never the locked one.
    for n in 4..=40u8 {
        let _ = limits.begin(&format!("u{n}@x.io"), IpAddr::from([10, 0, 0, n]), NOW);
        let w = limits.windows.lock().unwrap();
        assert!(w.by_pair.len() <= 4 && w.by_source.len() <= 4 && w.by_email.len() <= 4);
    }
    assert!(limits.begin("a@x.io", attacker, NOW + 1).is_err(), "still locked");
    assert!(
        limits.begin("z@x.io", ip("10.0.1.1"), NOW + WINDOW_S).is_ok(),
        "ended windows go first"
    );
}
