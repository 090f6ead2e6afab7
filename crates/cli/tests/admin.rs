//! `router-one admin …` end to end: the real binary against a fresh data directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `router-one admin <args> --data <dir>` with no config file from the environment.
fn admin(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_router-one"))
        .arg("admin")
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("ROUTER_ONE_CONFIG")
        .env_remove("ROUTER_ONE_DATA_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running router-one")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must succeed.
fn ok(data: &Path, args: &[&str]) -> String {
    let out = admin(data, args);
    assert!(
        out.status.success(),
        "`admin {}` failed ({:?}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs a command that must fail with exit code 1; returns its stderr.
fn fails(data: &Path, args: &[&str]) -> String {
    let out = admin(data, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`admin {}` should fail:\nstdout: {}\nstderr: {}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(json).collect()
}

/// The balance of an account, from `ledger --json`'s last line (which also checks it is Σ entries).
fn balance(data: &Path, account: &str) -> String {
    let lines = json_lines(&ok(data, &["ledger", "--account", account, "--json"]));
    lines.last().unwrap()["balance"].as_str().unwrap().to_owned()
}

#[test]
fn credit_debit_and_the_ledger_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    let created = json(&ok(
        data,
        &["create-account", "--email", "Alice@Example.com", "--credit", "25.50"],
    ));
    let account = created["account_id"].as_str().unwrap().to_owned();
    assert!(account.starts_with("acct_"), "{created}");
    assert!(created["management_key"].as_str().unwrap().starts_with("sk-rm-"));
    assert_eq!(created["email"], "alice@example.com");

    // Credit by id, debit by email (any case).
    let credit = json(&ok(
        data,
        &[
            "credit",
            "--account",
            &account,
            "--amount",
            "10.0000000001",
            "--reason",
            "goodwill",
        ],
    ));
    assert_eq!(credit["balance"], "35.5000000001", "{credit}");
    assert_eq!(credit["amount"], "10.0000000001");
    assert!(credit["entry_id"].as_i64().unwrap() > 0);
    let debit = json(&ok(
        data,
        &[
            "debit",
            "--account",
            "ALICE@example.com",
            "--amount",
            "5.5",
            "--reason",
            "correction",
        ],
    ));
    assert_eq!(debit["balance"], "30.0000000001", "{debit}");
    assert_eq!(debit["amount"], "-5.5");
    assert!(debit["entry_id"].as_i64() > credit["entry_id"].as_i64());

    // A debit larger than the balance is refused and changes nothing.
    let refused = fails(
        data,
        &[
            "debit",
            "--account",
            &account,
            "--amount",
            "30.0000000002",
            "--reason",
            "too much",
        ],
    );
    assert!(refused.contains("larger than the balance"), "{refused}");
    assert_eq!(balance(data, &account), "30.0000000001");

    // The ledger: opening balance, credit, debit — all adjustments, oldest first, Σ = balance.
    let lines = json_lines(&ok(data, &["ledger", "--account", &account, "--json"]));
    let (summary, entries) = lines.split_last().unwrap();
    let amounts: Vec<&str> = entries.iter().map(|e| e["amount"].as_str().unwrap()).collect();
    assert_eq!(amounts, ["25.5", "10.0000000001", "-5.5"], "{lines:?}");
    assert!(entries.iter().all(|e| e["kind"] == "adjustment"), "{lines:?}");
    assert_eq!(entries[1]["reason"], "goodwill");
    assert_eq!(entries[2]["reason"], "correction");
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(summary["balance"], "30.0000000001");
    assert_eq!(summary["sum"], "30.0000000001");
    assert_eq!(summary["entries"], 3);

    // The table form too.
    let table = ok(data, &["ledger", "--account", "alice@example.com"]);
    assert!(table.contains("adjustment") && table.contains("goodwill"), "{table}");
    assert!(table.contains("balance 30.0000000001"), "{table}");
}

#[test]
fn bad_adjustments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let created = json(&ok(
        data,
        &["create-account", "--email", "bob@example.com", "--credit", "1"],
    ));
    let account = created["account_id"].as_str().unwrap();

    let err = fails(
        data,
        &["credit", "--account", "acct_nope", "--amount", "1", "--reason", "x"],
    );
    assert!(err.contains("no account"), "{err}");
    let err = fails(
        data,
        &[
            "debit",
            "--account",
            "nobody@example.com",
            "--amount",
            "1",
            "--reason",
            "x",
        ],
    );
    assert!(err.contains("no account"), "{err}");
    let err = fails(
        data,
        &["credit", "--account", account, "--amount", "0", "--reason", "x"],
    );
    assert!(err.contains("greater than zero"), "{err}");
    let err = fails(
        data,
        &["debit", "--account", account, "--amount", "-1", "--reason", "x"],
    );
    assert!(err.contains("greater than zero"), "{err}");
    let err = fails(
        data,
        &[
            "credit",
            "--account",
            account,
            "--amount",
            "0.00000000001",
            "--reason",
            "x",
        ],
    );
    assert!(err.contains("decimal places"), "{err}");
    let err = fails(
        data,
        &["credit", "--account", account, "--amount", "1", "--reason", " "],
    );
    assert!(err.contains("--reason"), "{err}");
    assert_eq!(balance(data, account), "1");
}

#[test]
fn list_accounts_pages_through_every_account() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = json(&ok(
            data,
            &[
                "create-account",
                "--email",
                &format!("user{i}@example.com"),
                "--credit",
                "2",
            ],
        ));
        ids.push(created["account_id"].as_str().unwrap().to_owned());
    }
    let lines = json_lines(&ok(data, &["list-accounts", "--json"]));
    let listed: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(listed, sorted.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(lines.iter().all(|l| l["balance"] == "2" && l["referred_by"].is_null()));
    assert!(lines.iter().all(|l| l["created_at"].as_str().unwrap().ends_with('Z')));
    assert_eq!(lines[0]["email"], "user0@example.com");

    assert_eq!(
        json_lines(&ok(data, &["list-accounts", "--json", "--limit", "2"])).len(),
        2
    );

    let table = ok(data, &["list-accounts"]);
    assert!(table.starts_with("ID"), "{table}");
    for (i, id) in ids.iter().enumerate() {
        assert!(table.contains(id.as_str()), "{table}");
        assert!(table.contains(&format!("user{i}@example.com")), "{table}");
    }
    assert!(table.contains("3 account(s)"), "{table}");
}

#[test]
fn fx_rates_are_set_validated_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    let set = json(&ok(
        data,
        &[
            "set-fx",
            "--currency",
            "EUR",
            "--per-usd",
            "0.9234",
            "--markup-percent",
            "1.5",
            "--as-of",
            "2026-11-25T12:00:00Z",
        ],
    ));
    assert_eq!(set["per_usd"], "0.9234", "{set}");
    ok(
        data,
        &[
            "set-fx",
            "--currency",
            "JPY",
            "--per-usd",
            "156.2",
            "--minor-units",
            "0",
        ],
    );

    let rates = json_lines(&ok(data, &["fx-rates", "--json"]));
    assert_eq!(rates.len(), 2, "{rates:?}");
    let eur = rates.iter().find(|r| r["currency"] == "EUR").unwrap();
    assert_eq!(eur["per_usd"], "0.9234");
    assert_eq!(eur["markup_percent"], "1.5");
    assert_eq!(eur["minor_units"], 2);
    assert_eq!(eur["as_of"], "2026-11-25T12:00:00Z");
    let jpy = rates.iter().find(|r| r["currency"] == "JPY").unwrap();
    assert_eq!(jpy["minor_units"], 0);
    assert!(jpy["as_of"].as_str().unwrap().starts_with("20"), "{jpy}");
    let table = ok(data, &["fx-rates"]);
    assert!(table.contains("EUR") && table.contains("0.9234"), "{table}");

    // Replacing a rate keeps one entry per currency.
    ok(data, &["set-fx", "--currency", "EUR", "--per-usd", "0.95"]);
    let rates = json_lines(&ok(data, &["fx-rates", "--json"]));
    assert_eq!(rates.len(), 2);
    assert_eq!(
        rates.iter().find(|r| r["currency"] == "EUR").unwrap()["per_usd"],
        "0.95"
    );

    // Refusals name the field.
    let err = fails(data, &["set-fx", "--currency", "euro", "--per-usd", "0.9"]);
    assert!(err.contains("fx.euro") && err.contains("ISO 4217"), "{err}");
    let err = fails(data, &["set-fx", "--currency", "GBP", "--per-usd", "0"]);
    assert!(err.contains("fx.GBP.per_usd"), "{err}");
    let err = fails(data, &["set-fx", "--currency", "GBP", "--per-usd", "-1"]);
    assert!(err.contains("fx.GBP.per_usd"), "{err}");
    let err = fails(
        data,
        &[
            "set-fx",
            "--currency",
            "GBP",
            "--per-usd",
            "0.8",
            "--markup-percent",
            "-1",
        ],
    );
    assert!(err.contains("fx.GBP.markup_percent"), "{err}");
    let err = fails(
        data,
        &[
            "set-fx",
            "--currency",
            "GBP",
            "--per-usd",
            "0.8",
            "--as-of",
            "yesterday",
        ],
    );
    assert!(err.contains("fx.GBP.as_of"), "{err}");
    let err = fails(data, &["set-fx", "--currency", "USD", "--per-usd", "2"]);
    assert!(err.contains("fx.USD.per_usd"), "{err}");
    let err = fails(data, &["set-fx", "--currency", "GBP", "--per-usd", "abc"]);
    assert!(err.contains("--per-usd"), "{err}");
    assert_eq!(json_lines(&ok(data, &["fx-rates", "--json"])).len(), 2);
}
