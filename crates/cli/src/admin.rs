//! `router-one admin …`: operator commands on the data directory's database.
//!
//! They are safe while a gateway runs on the same database (SQLite WAL and a busy timeout), and a
//! running gateway follows the ledger, so a credit or debit posted here reaches its in-memory
//! balances within a second; FX rates set here override the config file's and are reloaded.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use rust_decimal::Decimal;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use router_one_core::billing::{self, AdjustOutcome, ManagementKey};
use router_one_core::checkout::FxRate;
use router_one_core::store::{Account, LedgerEntry, Store};
use router_one_core::{Usd, ids};

use crate::cli::{
    AdjustArgs, AdminCommand, CreateAccountArgs, ForgetNodeArgs, FxRatesArgs, LedgerArgs, ListAccountsArgs,
    RotateReceiptKeyArgs, SetFxArgs, StoreArgs,
};
use crate::config::Config;
use crate::database::{self, Database};
use crate::serve::data_dir;

/// Accounts or ledger entries read per store call.
const PAGE: u32 = 500;
/// The exit code of `ledger` when the balance is not the sum of the entries.
const EXIT_LEDGER_MISMATCH: i32 = 2;

/// Runs one admin command.
pub(crate) async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::CreateAccount(args) => create_account(args).await,
        AdminCommand::Credit(args) => adjust(args, false).await,
        AdminCommand::Debit(args) => adjust(args, true).await,
        AdminCommand::ListAccounts(args) => list_accounts(args).await,
        AdminCommand::Ledger(args) => ledger(args).await,
        AdminCommand::SetFx(args) => set_fx(args).await,
        AdminCommand::FxRates(args) => fx_rates(args).await,
        AdminCommand::ForgetNode(args) => forget_node(args).await,
        AdminCommand::RotateReceiptKey(args) => rotate_receipt_key(args).await,
    }
}

/// Rotates the data directory's receipt signing key and publishes the new public key (every
/// node's JWKS serves it at once; this directory's gateway signs with it from its next start).
async fn rotate_receipt_key(args: RotateReceiptKeyArgs) -> Result<()> {
    let config = Config::load(args.store.config.as_deref())?;
    let dir = data_dir(&config, args.store.data.clone());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    let ring = router_one_receipts::KeyRing::rotate(&dir)?;
    let (_, database) = open(args.store).await?;
    crate::serve::publish_receipt_keys(database.store().as_ref(), &ring).await?;
    database.close().await;
    let retired: Vec<&str> = ring.retired.iter().map(|k| k.kid.as_str()).collect();
    println!("{}", json!({ "kid": ring.signer.kid(), "retired": retired }));
    Ok(())
}

/// Opens the database `--database` or the config names, else the data directory's SQLite file;
/// also returns the config.
async fn open(args: StoreArgs) -> Result<(Config, Database)> {
    let config = Config::load(args.config.as_deref())?;
    let dir: PathBuf = data_dir(&config, args.data);
    let url = database::url(&config, args.database)?;
    let store = Database::open(url.as_deref(), &dir).await?;
    Ok((config, store))
}

/// Creates an account with a management key; returns `(account, management key plaintext)`.
/// The email is trimmed and lower-cased; a non-zero `credit` is posted as the opening
/// `adjustment`. The account has no password (it cannot log in; its management key acts for it).
pub(crate) async fn new_account(store: &dyn Store, email: &str, credit: Usd) -> Result<(Account, String)> {
    if credit < Usd::ZERO {
        bail!("credit must not be negative");
    }
    let email = normalize_email(email)?;
    let now = ids::now_us();
    let account = Account {
        id: ids::new_id("acct"),
        email,
        balance: credit,
        created_at_us: now,
        invite_code: billing::new_invite_code(),
        referred_by: None,
        ledger_head: 0,
    };
    let (key, plaintext) = ManagementKey::generate(&account.id, Some("operator".into()), now);
    store
        .create_account(&account, None, &key)
        .await
        .with_context(|| format!("creating the account for {}", account.email))?;
    Ok((account, plaintext))
}

/// An email in its stored form (the sign-up endpoint's rule: `core::billing::normalize_email`).
fn normalize_email(email: &str) -> Result<String> {
    billing::normalize_email(email).ok_or_else(|| anyhow!("`{}` is not a valid email address", email.trim()))
}

/// `router-one admin create-account`.
async fn create_account(args: CreateAccountArgs) -> Result<()> {
    let credit: Usd = args.credit.parse().context("--credit")?;
    let (_, store) = open(args.store).await?;
    let result = new_account(&*store, &args.email, credit).await;
    store.close().await;
    let (account, key) = result?;
    println!(
        "{}",
        json!({
            "account_id": account.id,
            "email": account.email,
            "balance": account.balance,
            "invite_code": account.invite_code,
            "management_key": key,
        })
    );
    Ok(())
}

/// Finds an account by id (`acct_…`) or by email (anything with an `@`).
async fn find_account(store: &dyn Store, who: &str) -> Result<Account> {
    let who = who.trim();
    if who.is_empty() {
        bail!("--account is empty: give an account id (acct_…) or an email");
    }
    let found = if who.contains('@') {
        let email = who.to_lowercase();
        store
            .account_by_email(&email)
            .await
            .with_context(|| format!("looking up the account with email {email}"))?
            .map(|(account, _)| account)
    } else {
        store
            .account(who)
            .await
            .with_context(|| format!("looking up account {who}"))?
    };
    found.ok_or_else(|| anyhow!("no account `{who}` (give an account id, acct_…, or its email)"))
}

/// A positive USD amount from the command line: decimal, at most ten decimal places.
fn parse_positive_usd(flag: &str, text: &str) -> Result<Usd> {
    let amount: Usd = text
        .parse()
        .with_context(|| format!("{flag} must be a decimal amount of USD with at most 10 decimal places"))?;
    if amount <= Usd::ZERO {
        bail!("{flag} must be greater than zero (got `{text}`); use `credit` or `debit` for the direction");
    }
    Ok(amount)
}

/// `router-one admin credit` (`debit == false`) and `router-one admin debit`.
async fn adjust(args: AdjustArgs, debit: bool) -> Result<()> {
    let amount = parse_positive_usd("--amount", &args.amount)?;
    let signed = if debit {
        Usd::ZERO
            .checked_sub(amount)
            .ok_or_else(|| anyhow!("--amount {amount} is out of range"))?
    } else {
        amount
    };
    let reason = args.reason.trim().to_owned();
    if reason.is_empty() {
        bail!("--reason must not be empty: say why the balance changes");
    }
    let (_, store) = open(args.store).await?;
    let result = post_adjustment(&*store, &args.account, signed, &reason).await;
    store.close().await;
    let (account, entry_id, balance) = result?;
    println!(
        "{}",
        json!({
            "entry_id": entry_id,
            "account_id": account.id,
            "email": account.email,
            "kind": "adjustment",
            "amount": signed,
            "reason": reason,
            "balance": balance,
        })
    );
    Ok(())
}

/// Posts the adjustment; returns the account, the entry id and the new balance.
async fn post_adjustment(store: &dyn Store, who: &str, amount: Usd, reason: &str) -> Result<(Account, i64, Usd)> {
    let account = find_account(store, who).await?;
    let outcome = store
        .adjust_balance(&account.id, amount, reason, ids::now_us())
        .await
        .with_context(|| format!("posting the adjustment to {}", account.id))?;
    match outcome {
        AdjustOutcome::Applied { entry_id, balance } => Ok((account, entry_id, balance)),
        AdjustOutcome::InsufficientBalance { balance } => bail!(
            "refused: a debit of {} USD is larger than the balance of {} ({balance} USD); nothing was posted",
            Usd::ZERO.saturating_sub(amount),
            account.id
        ),
        AdjustOutcome::UnknownAccount => bail!("no account `{}`", account.id),
    }
}

/// Writes `rows` as a table with left-aligned columns under `header`.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `router-one admin list-accounts`.
async fn list_accounts(args: ListAccountsArgs) -> Result<()> {
    let (_, store) = open(args.store).await?;
    let result = all_accounts(&*store, args.limit).await;
    store.close().await;
    let accounts = result?;
    if args.json {
        for account in &accounts {
            println!(
                "{}",
                json!({
                    "id": account.id,
                    "email": account.email,
                    "balance": account.balance,
                    "referred_by": account.referred_by,
                    "invite_code": account.invite_code,
                    "created_at": ids::rfc3339(account.created_at_us),
                })
            );
        }
    } else {
        let rows: Vec<Vec<String>> = accounts
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.email.clone(),
                    a.balance.to_string(),
                    a.referred_by.clone().unwrap_or_else(|| "-".into()),
                    ids::rfc3339(a.created_at_us),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["ID", "EMAIL", "BALANCE", "REFERRED_BY", "CREATED_AT"], &rows)
        );
        println!("{} account(s)", accounts.len());
    }
    Ok(())
}

/// Every account in id order (at most `limit`), page by page.
async fn all_accounts(store: &dyn Store, limit: Option<u64>) -> Result<Vec<Account>> {
    let mut accounts: Vec<Account> = Vec::new();
    loop {
        let wanted = match limit {
            Some(limit) => {
                let left = limit.saturating_sub(accounts.len() as u64);
                if left == 0 {
                    break;
                }
                u32::try_from(left).unwrap_or(PAGE).min(PAGE)
            }
            None => PAGE,
        };
        let after = accounts.last().map(|a| a.id.clone());
        let page = store
            .accounts(after.as_deref(), wanted)
            .await
            .context("listing accounts")?;
        let done = page.len() < wanted as usize;
        accounts.extend(page);
        if done {
            break;
        }
    }
    Ok(accounts)
}

/// `router-one admin ledger`.
async fn ledger(args: LedgerArgs) -> Result<()> {
    let (_, store) = open(args.store).await?;
    let result = read_ledger(&*store, &args.account).await;
    store.close().await;
    let (account, entries) = result?;
    let mut sum = Usd::ZERO;
    for entry in &entries {
        sum = sum
            .checked_add(entry.amount)
            .ok_or_else(|| anyhow!("the sum of the ledger of {} overflows", account.id))?;
    }
    if args.json {
        for e in &entries {
            println!(
                "{}",
                json!({
                    "id": e.id,
                    "created_at": ids::rfc3339(e.created_at_us),
                    "kind": e.kind,
                    "amount": e.amount,
                    "reference": e.reference,
                    "reason": e.reason,
                })
            );
        }
        println!(
            "{}",
            json!({
                "account_id": account.id,
                "email": account.email,
                "entries": entries.len(),
                "sum": sum,
                "balance": account.balance,
            })
        );
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.id.to_string(),
                    ids::rfc3339(e.created_at_us),
                    e.kind.as_str().to_owned(),
                    e.amount.to_string(),
                    e.reference.clone().unwrap_or_else(|| "-".into()),
                    e.reason.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        println!("account {} <{}>", account.id, account.email);
        print!(
            "{}",
            table(&["ID", "CREATED_AT", "KIND", "AMOUNT", "REFERENCE", "REASON"], &rows)
        );
        println!("{} entries, sum {sum}, balance {}", entries.len(), account.balance);
    }
    if sum != account.balance {
        let _ = std::io::stdout().flush();
        eprintln!(
            "warning: the balance of {} ({}) is not the sum of its ledger entries ({sum})",
            account.id, account.balance
        );
        std::process::exit(EXIT_LEDGER_MISMATCH);
    }
    Ok(())
}

/// The account and every ledger entry in its balance, oldest first. The account is read first:
/// its `ledger_head` is the last entry its `balance` includes, so entries posted meanwhile (a
/// running gateway, a webhook) are left out and the check compares one consistent snapshot.
async fn read_ledger(store: &dyn Store, who: &str) -> Result<(Account, Vec<LedgerEntry>)> {
    let account = find_account(store, who).await?;
    let mut entries: Vec<LedgerEntry> = Vec::new();
    'pages: loop {
        let after = entries.last().map(|e| e.id);
        let page = store
            .ledger(&account.id, after, PAGE)
            .await
            .with_context(|| format!("reading the ledger of {}", account.id))?;
        let done = page.len() < PAGE as usize;
        for entry in page {
            if entry.id > account.ledger_head {
                break 'pages;
            }
            entries.push(entry);
        }
        if done {
            break;
        }
    }
    Ok((account, entries))
}

/// A decimal from the command line, exactly as written.
fn parse_decimal(flag: &str, text: &str) -> Result<Decimal> {
    Decimal::from_str_exact(text.trim()).map_err(|e| anyhow!("{flag} (`{text}`) is not a decimal number: {e}"))
}

/// `router-one admin set-fx`.
async fn set_fx(args: SetFxArgs) -> Result<()> {
    let currency = args.currency.trim().to_owned();
    let as_of = match args.as_of {
        Some(as_of) => as_of.trim().to_owned(),
        None => OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| OffsetDateTime::now_utc())
            .format(&Rfc3339)
            .context("formatting the current time")?,
    };
    let rate = FxRate {
        per_usd: parse_decimal("--per-usd", &args.per_usd)?,
        as_of,
        markup_percent: parse_decimal("--markup-percent", &args.markup_percent)?,
        minor_units: args.minor_units,
    };
    rate.validate(&currency)
        .map_err(|e| anyhow!("invalid FX rate for `{currency}`: {e}"))?;
    let (config, store) = open(args.store).await?;
    let result = store
        .set_fx_rate(&currency, &rate)
        .await
        .with_context(|| format!("storing the FX rate of {currency}"));
    store.close().await;
    result?;
    println!("{}", fx_json(&currency, &rate));
    if currency != router_one_core::checkout::USD
        && !config
            .checkout
            .channels
            .values()
            .any(|channel| channel.currencies.contains(&currency))
    {
        eprintln!(
            "note: no payment channel in the config accepts {currency}; add it to a channel's `currencies` to offer it"
        );
    }
    Ok(())
}

/// One FX rate as JSON (decimal strings).
fn fx_json(currency: &str, rate: &FxRate) -> serde_json::Value {
    json!({
        "currency": currency,
        "per_usd": rate.per_usd.to_string(),
        "markup_percent": rate.markup_percent.to_string(),
        "minor_units": rate.minor_units,
        "as_of": rate.as_of,
    })
}

/// `router-one admin fx-rates`.
async fn fx_rates(args: FxRatesArgs) -> Result<()> {
    let (_, store) = open(args.store).await?;
    let result = store.fx_rates().await.context("reading the stored FX rates");
    store.close().await;
    let rates = result?;
    if args.json {
        for (currency, rate) in &rates {
            println!("{}", fx_json(currency, rate));
        }
    } else {
        let rows: Vec<Vec<String>> = rates
            .iter()
            .map(|(currency, rate)| {
                vec![
                    currency.clone(),
                    rate.per_usd.to_string(),
                    rate.markup_percent.to_string(),
                    rate.minor_units.to_string(),
                    rate.as_of.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["CURRENCY", "PER_USD", "MARKUP_PERCENT", "MINOR_UNITS", "AS_OF"],
                &rows
            )
        );
        println!(
            "{} rate(s) set with set-fx (they override the config file's)",
            rates.len()
        );
    }
    Ok(())
}

/// `router-one admin forget-node ID`: for a cluster node that will never come back (its disk is
/// gone). Its budget leases go back to their accounts and keys; records it journaled and never
/// committed are lost with its disk. Prints what was released.
async fn forget_node(args: ForgetNodeArgs) -> Result<()> {
    let (_, database) = open(args.store).await?;
    let result = match database.cluster_store() {
        Some(cluster) => cluster.forget_node(&args.node_id).await.context("forgetting the node"),
        None => Err(anyhow!(
            "cluster nodes exist only on PostgreSQL: give --database postgres://…"
        )),
    };
    database.close().await;
    match result? {
        Some(released) => {
            println!("{}", json!({ "node_id": args.node_id, "released": released }));
            Ok(())
        }
        None => bail!("no node `{}` is registered", args.node_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").ok().as_deref(),
            Some("alice@example.com")
        );
        for bad in ["", "alice", "@example.com", "alice@", "a b@example.com", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_are_positive_exact_decimals() {
        assert_eq!(
            parse_positive_usd("--amount", "12.5").ok(),
            Some(Usd::from_units(125_000_000_000))
        );
        assert_eq!(
            parse_positive_usd("--amount", "0.0000000001").ok(),
            Some(Usd::from_units(1))
        );
        for bad in ["0", "-1", "0.00000000001", "1e3", "abc", ""] {
            assert!(parse_positive_usd("--amount", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_align_columns() {
        let out = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(out, "A    BB\nxxx  y\n");
    }
}
