//! Property test of the prepaid ledger (docs/accounts-and-billing.md): random sequences of
//! sign-ups (some referred), top-ups through the simulated payment provider, inference requests,
//! refunds and chargebacks, replayed or delayed webhooks and operator adjustments, run against a
//! real gateway (SQLite store, usage writer, ledger follower) and the in-process simulator.
//!
//! After every sequence, for every account: balance = Σ ledger entries exactly; Σ usage debits =
//! Σ usage-record costs; no balance is or ever was negative; top-ups, commissions and reversals
//! match the payments; the test's own model (decimal arithmetic over what it did) equals the
//! database; and the gateway's live budget agrees with the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::Row;

use router_one_core::Catalog;
use router_one_core::Usd;
use router_one_core::billing::AdjustOutcome;
use router_one_core::checkout::CheckoutConfig;
use router_one_core::store::Store;
use router_one_core::webhook::SIGNATURE_HEADER;
use router_one_payments::{PaymentProvider, SimulatedProvider};
use router_one_providers::{ApiStyle, OutputLimitField, Provider, ProviderConfig};
use router_one_server::{AppState, ServerConfig};
use router_one_simulator::SimConfig;
use router_one_store::{SqliteStore, UsageWriter};

const CATALOG: &str = include_str!("../../../catalog/models.toml");
const DEFAULT_CONFIG: &str = include_str!("../../../config/router-one.toml");

/// An OpenAI-format model with high rates, so that requests make a visible dent in small
/// balances (commissions, operator credits).
const MODEL: &str = "gpt-6.2-astra";
/// Units per USD (`Usd` has 10 decimal places).
const UNITS_PER_USD: i64 = 10_000_000_000;
const COMMISSION_PERCENT: i64 = 5;
const PROVIDER: &str = "simulated";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

// ------------------------------------------------------------------------------------------
// The environment: one simulator and one gateway for the whole test; fresh accounts per case.

struct Env {
    gateway: String,
    sim: String,
    state: Arc<AppState>,
    store: Arc<SqliteStore>,
    usage: UsageWriter,
    client: HttpClient,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();

    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = sim_listener.local_addr().unwrap();
    tokio::spawn(async move {
        router_one_simulator::serve(sim_listener, SimConfig::default())
            .await
            .unwrap();
    });
    let sim = format!("http://{sim_addr}");

    // Bind the gateway first: its public URL is the payment provider's webhook target.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());

    let catalog = Catalog::from_toml(CATALOG).unwrap();
    let defaults: toml::Table = toml::from_str(DEFAULT_CONFIG).unwrap();
    let checkout: CheckoutConfig = defaults["checkout"].clone().try_into().unwrap();

    let provider_config = ProviderConfig {
        api: ApiStyle::OpenAi,
        base_url: format!("{sim}/v1"),
        api_key_env: "ROUTER_ONE_LEDGER_PROPERTY_UNSET".into(),
        keys: Vec::new(),
        api_version: None,
        project: None,
        region: None,
        credentials_env: None,
        token_url: None,
        output_limit_field: OutputLimitField::MaxCompletionTokens,
    };
    let mut provider = Provider::from_config("openai", &provider_config);
    provider.set_api_key("sim-upstream-key");
    let providers = HashMap::from([("openai".to_owned(), Arc::new(provider))]);

    let store = Arc::new(SqliteStore::open(&dir.path().join("router-one.db")).await.unwrap());
    let store_dyn: Arc<dyn Store> = store.clone();
    let usage = UsageWriter::start(&dir.path().join("journal"), store_dyn.clone(), 512)
        .await
        .unwrap();

    let pay_defaults = SimConfig::default().payments;
    let simulated: Arc<dyn PaymentProvider> = Arc::new(SimulatedProvider::new(
        PROVIDER,
        sim.clone(),
        pay_defaults.api_key,
        pay_defaults.webhook_secret,
    ));
    let payments = HashMap::from([(PROVIDER.to_owned(), simulated)]);

    let config = ServerConfig {
        public_url: gateway.clone(),
        commission_percent: Decimal::from(COMMISSION_PERCENT),
        checkout,
        ..ServerConfig::default()
    };
    router_one_providers::estimate::warm_up();
    let state = Arc::new(
        AppState::new(
            config,
            catalog,
            providers,
            store_dyn,
            usage.clone(),
            payments,
            Default::default(),
        )
        .await
        .unwrap(),
    );
    router_one_server::follower::spawn(state.clone());
    let app = router_one_server::app(state.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });

    Env {
        gateway,
        sim,
        state,
        store,
        usage,
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(request.body(Full::new(body)).unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("{url}: no answer in 30 s"))
    .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body }
}

async fn post_json(client: &HttpClient, url: &str, bearer: Option<&str>, body: &Value) -> Answer {
    call(client, Method::POST, url, bearer, &[], Bytes::from(body.to_string())).await
}

// ------------------------------------------------------------------------------------------
// Operations.

/// Top-up amounts (USD) and (currency, channel) pairs the default config offers.
const AMOUNTS: [&str; 4] = ["1.00", "2.50", "7.77", "10.00"];
const PAIRS: [(&str, &str); 4] = [("USD", "card"), ("EUR", "card"), ("CNY", "alipay"), ("USD", "alipay")];

#[derive(Clone, Debug)]
enum Op {
    /// A new account, invited by an existing one (or not), with one inference key.
    SignUp { inviter: Option<Index> },
    /// A checkout session, paid at the simulator; `deliver: false` holds the webhook back (a
    /// later `Replay` delivers it: a late or reordered delivery).
    TopUp {
        account: Index,
        amount: &'static str,
        pair: (&'static str, &'static str),
        deliver: bool,
    },
    /// A chat completion. `max_tokens: None` lets the gateway clamp the output to the balance.
    Request {
        account: Index,
        max_tokens: Option<u64>,
        words: u64,
        stream: bool,
    },
    /// A refund or chargeback at the simulator.
    Reverse {
        payment: Index,
        chargeback: bool,
        deliver: bool,
    },
    /// One of a payment's webhooks delivered again (or for the first time).
    Replay { payment: Index, event: Index },
    /// An operator's credit or debit (cents), straight through the store as the CLI does.
    Adjust { account: Index, cents: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => proptest::option::weighted(0.6, any::<Index>()).prop_map(|inviter| Op::SignUp { inviter }),
        5 => (any::<Index>(), select(AMOUNTS.to_vec()), select(PAIRS.to_vec()), proptest::bool::weighted(0.8))
            .prop_map(|(account, amount, pair, deliver)| Op::TopUp { account, amount, pair, deliver }),
        8 => (
            any::<Index>(),
            proptest::option::weighted(0.7, 1u64..=2500),
            1u64..=3000,
            proptest::bool::weighted(0.3),
        )
            .prop_map(|(account, max_tokens, words, stream)| Op::Request { account, max_tokens, words, stream }),
        2 => (any::<Index>(), any::<bool>(), proptest::bool::weighted(0.8))
            .prop_map(|(payment, chargeback, deliver)| Op::Reverse { payment, chargeback, deliver }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(payment, event)| Op::Replay { payment, event }),
        1 => (any::<Index>(), -300i64..=300).prop_map(|(account, cents)| Op::Adjust { account, cents }),
    ]
}

// ------------------------------------------------------------------------------------------
// The test's own model of what the ledger must hold.

struct Account {
    id: String,
    management_key: String,
    inference_key: String,
    invite_code: String,
    inviter: Option<usize>,
    /// Expected balance, units.
    balance: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventKind {
    Succeeded,
    Refunded,
    ChargedBack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GatewayState {
    /// The gateway has not received the payment's `payment.succeeded` yet.
    Unconfirmed,
    Paid,
    Reversed,
}

struct Payment {
    payment_id: String,
    session_id: String,
    account: usize,
    credited: i64,
    referrer: Option<usize>,
    commission: i64,
    events: Vec<(EventKind, String, String)>,
    state: GatewayState,
    reversed: i64,
    commission_reversed: i64,
    reversal_kind: Option<EventKind>,
}

struct UsageSeen {
    account: usize,
    request_id: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: i64,
}

#[derive(Default)]
struct Model {
    accounts: Vec<Account>,
    payments: Vec<Payment>,
    requests: Vec<UsageSeen>,
    log: Vec<String>,
}

fn usd_units(text: &str) -> i64 {
    let d = Decimal::from_str_exact(text).unwrap() * Decimal::from(UNITS_PER_USD);
    assert!(d.fract().is_zero(), "{text} is not a whole number of units");
    i64::try_from(d.mantissa() / 10i128.pow(d.scale())).unwrap()
}

/// What `prompt` in and `completion` out of [`MODEL`] cost, units, from the catalog's rates with
/// the test's own arithmetic. The rates have at most 2 decimals per million tokens, so the cost
/// is exact at 10⁻¹⁰ USD.
fn cost_units(env: &Env, prompt: i64, completion: i64) -> i64 {
    let model = env.state.catalog.get(MODEL).unwrap();
    let usd = (Decimal::from(prompt) * model.input_per_mtok + Decimal::from(completion) * model.output_per_mtok)
        / Decimal::from(1_000_000);
    let units = usd * Decimal::from(UNITS_PER_USD);
    assert!(units.fract().is_zero(), "cost {usd} is not exact in units");
    i64::try_from(units.trunc().mantissa() / 10i128.pow(units.trunc().scale())).unwrap()
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($fmt)+)));
        }
    };
}

static CASE: AtomicU64 = AtomicU64::new(0);

async fn run_case(env: &Env, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let case = CASE.fetch_add(1, Ordering::SeqCst);
    let mut model = Model::default();
    // Every sequence starts with one account, so that account operations have a target.
    let mut all = vec![Op::SignUp { inviter: None }];
    all.extend(ops);
    let result = run_ops(env, case, &mut model, &all).await;
    let result = match result {
        Ok(()) => verify(env, &model).await,
        Err(e) => Err(e),
    };
    if std::env::var_os("LEDGER_PROPERTY_STATS").is_some() {
        let refused = model.log.iter().filter(|l| l.ends_with("402 Payment Required")).count();
        let partial = model
            .payments
            .iter()
            .filter(|p| p.reversed < p.credited || p.commission_reversed < p.commission)
            .filter(|p| p.state == GatewayState::Reversed)
            .count();
        eprintln!(
            "case {case}: {} ops, {} accounts ({} referred), {} payments ({} confirmed, {} reversed, {partial} partly), \
             {} requests served, {refused} refused (402)",
            model.log.len(),
            model.accounts.len(),
            model.accounts.iter().filter(|a| a.inviter.is_some()).count(),
            model.payments.len(),
            model
                .payments
                .iter()
                .filter(|p| p.state != GatewayState::Unconfirmed)
                .count(),
            model
                .payments
                .iter()
                .filter(|p| p.state == GatewayState::Reversed)
                .count(),
            model.requests.len(),
        );
    }
    result.map_err(|e| TestCaseError::fail(format!("{e}\nexecuted:\n  {}", model.log.join("\n  "))))
}

async fn run_ops(env: &Env, case: u64, model: &mut Model, ops: &[Op]) -> Result<(), TestCaseError> {
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::SignUp { inviter } => {
                let inviter = if model.accounts.is_empty() {
                    None
                } else {
                    inviter.map(|i| i.index(model.accounts.len()))
                };
                sign_up(env, case, model, inviter).await?;
            }
            Op::TopUp {
                account,
                amount,
                pair,
                deliver,
            } => {
                let account = account.index(model.accounts.len());
                top_up(env, model, account, amount, *pair, *deliver).await?;
            }
            Op::Request {
                account,
                max_tokens,
                words,
                stream,
            } => {
                let account = account.index(model.accounts.len());
                request(env, model, account, *max_tokens, *words, *stream).await?;
            }
            Op::Reverse {
                payment,
                chargeback,
                deliver,
            } => {
                if model.payments.is_empty() {
                    continue;
                }
                let payment = payment.index(model.payments.len());
                reverse(env, model, payment, *chargeback, *deliver).await?;
            }
            Op::Replay { payment, event } => {
                if model.payments.is_empty() {
                    continue;
                }
                let payment = payment.index(model.payments.len());
                let event = event.index(model.payments[payment].events.len());
                replay(env, model, payment, event).await?;
            }
            Op::Adjust { account, cents } => {
                let account = account.index(model.accounts.len());
                adjust(env, model, account, *cents).await?;
            }
        }
        for (i, a) in model.accounts.iter().enumerate() {
            check!(
                a.balance >= 0,
                "step {step}: the model's balance of account {i} went negative: {}",
                a.balance
            );
        }
    }
    Ok(())
}

async fn sign_up(env: &Env, case: u64, model: &mut Model, inviter: Option<usize>) -> Result<(), TestCaseError> {
    let n = model.accounts.len();
    let mut body = json!({"email": format!("case{case}-user{n}@example.com"), "password": "correct horse battery"});
    if let Some(i) = inviter {
        body["invite_code"] = json!(model.accounts[i].invite_code);
    }
    let answer = post_json(&env.client, &format!("{}/v1/auth/signup", env.gateway), None, &body).await;
    check!(
        answer.status == StatusCode::CREATED,
        "signup: {} {}",
        answer.status,
        answer.text()
    );
    let signup = answer.json();
    let inviter_id = inviter.map(|i| model.accounts[i].id.clone());
    check!(
        signup["referred_by"].as_str().map(str::to_owned) == inviter_id,
        "signup: referred_by {} but invited by {inviter_id:?}",
        signup["referred_by"]
    );
    let management_key = signup["management_key"].as_str().unwrap().to_owned();
    let key = post_json(
        &env.client,
        &format!("{}/v1/keys", env.gateway),
        Some(&management_key),
        &json!({"name": "property"}),
    )
    .await;
    check!(
        key.status == StatusCode::CREATED,
        "create key: {} {}",
        key.status,
        key.text()
    );
    model.accounts.push(Account {
        id: signup["account_id"].as_str().unwrap().to_owned(),
        management_key,
        inference_key: key.json()["key"].as_str().unwrap().to_owned(),
        invite_code: signup["invite_code"].as_str().unwrap().to_owned(),
        inviter,
        balance: 0,
    });
    model.log.push(format!("SignUp #{n} invited_by={inviter:?}"));
    Ok(())
}

async fn top_up(
    env: &Env,
    model: &mut Model,
    account: usize,
    amount: &str,
    (currency, channel): (&str, &str),
    deliver: bool,
) -> Result<(), TestCaseError> {
    let a = &model.accounts[account];
    let session = post_json(
        &env.client,
        &format!("{}/v1/checkout/sessions", env.gateway),
        Some(&a.management_key),
        &json!({"amount_usd": amount, "currency": currency, "channel": channel}),
    )
    .await;
    check!(
        session.status == StatusCode::CREATED,
        "checkout session: {} {}",
        session.status,
        session.text()
    );
    let session = session.json();
    check!(
        session["quote"]["token_line_usd"].as_str().map(usd_units) == Some(usd_units(amount)),
        "the quote's token line is not the amount bought: {session}"
    );
    let url = session["payment_url"].as_str().unwrap();
    let url = if deliver {
        url.to_owned()
    } else {
        format!("{url}?deliver=false")
    };
    let paid = call(&env.client, Method::POST, &url, None, &[], Bytes::new()).await;
    check!(paid.status == StatusCode::OK, "pay: {} {}", paid.status, paid.text());
    let paid = paid.json();
    let credited = usd_units(amount);
    let referrer = a.inviter;
    let index = model.payments.len();
    model.payments.push(Payment {
        payment_id: paid["payment_id"].as_str().unwrap().to_owned(),
        session_id: session["id"].as_str().unwrap().to_owned(),
        account,
        credited,
        referrer,
        commission: referrer.map_or(0, |_| credited * COMMISSION_PERCENT / 100),
        events: vec![(
            EventKind::Succeeded,
            paid["event"]["body"].as_str().unwrap().to_owned(),
            paid["event"]["signature"].as_str().unwrap().to_owned(),
        )],
        state: GatewayState::Unconfirmed,
        reversed: 0,
        commission_reversed: 0,
        reversal_kind: None,
    });
    model.log.push(format!(
        "TopUp account={account} {amount} USD via {currency}/{channel} deliver={deliver} -> payment #{index}"
    ));
    if deliver {
        let delivery = &paid["delivery"];
        delivered(model, index, EventKind::Succeeded, delivery)?;
    }
    Ok(())
}

/// Checks the gateway's answer to a webhook against the model and applies it to the model.
fn delivered(model: &mut Model, payment: usize, kind: EventKind, delivery: &Value) -> Result<(), TestCaseError> {
    let status = delivery["status"].as_u64();
    let outcome = delivery["body"]["outcome"].as_str();
    let p = &model.payments[payment];
    match (kind, p.state) {
        (EventKind::Succeeded, GatewayState::Unconfirmed) => {
            check!(
                status == Some(200) && outcome == Some("credited"),
                "payment #{payment}: first payment.succeeded answered {delivery}"
            );
            let (account, credited, referrer, commission) = (p.account, p.credited, p.referrer, p.commission);
            model.payments[payment].state = GatewayState::Paid;
            model.accounts[account].balance += credited;
            if let Some(r) = referrer {
                model.accounts[r].balance += commission;
            }
        }
        (EventKind::Succeeded, _) => {
            check!(
                status == Some(200) && outcome == Some("duplicate"),
                "payment #{payment}: repeated payment.succeeded answered {delivery}"
            );
        }
        (_, GatewayState::Unconfirmed) => {
            check!(
                status == Some(409),
                "payment #{payment}: a reversal before the payment was confirmed answered {delivery}"
            );
        }
        (_, GatewayState::Paid) => {
            check!(
                status == Some(200) && outcome == Some("reversed"),
                "payment #{payment}: first reversal answered {delivery}"
            );
            let (account, credited, referrer, commission) = (p.account, p.credited, p.referrer, p.commission);
            // At most what the account can spare (nothing is in flight between operations).
            let reversed = credited.min(model.accounts[account].balance);
            model.accounts[account].balance -= reversed;
            let commission_reversed = match referrer {
                Some(r) => {
                    let taken = commission.min(model.accounts[r].balance);
                    model.accounts[r].balance -= taken;
                    taken
                }
                None => 0,
            };
            let p = &mut model.payments[payment];
            p.state = GatewayState::Reversed;
            p.reversed = reversed;
            p.commission_reversed = commission_reversed;
            p.reversal_kind = Some(kind);
        }
        (_, GatewayState::Reversed) => {
            check!(
                status == Some(200) && outcome == Some("already_reversed"),
                "payment #{payment}: repeated reversal answered {delivery}"
            );
        }
    }
    Ok(())
}

async fn reverse(
    env: &Env,
    model: &mut Model,
    payment: usize,
    chargeback: bool,
    deliver: bool,
) -> Result<(), TestCaseError> {
    let (action, kind) = if chargeback {
        ("chargeback", EventKind::ChargedBack)
    } else {
        ("refund", EventKind::Refunded)
    };
    let p = &model.payments[payment];
    let query = if deliver { "" } else { "?deliver=false" };
    let url = format!("{}/payments/v1/payments/{}/{action}{query}", env.sim, p.payment_id);
    let pay_key = SimConfig::default().payments.api_key;
    let answer = call(&env.client, Method::POST, &url, Some(&pay_key), &[], Bytes::new()).await;
    check!(
        answer.status == StatusCode::OK,
        "{action}: {} {}",
        answer.status,
        answer.text()
    );
    let answer = answer.json();
    model.payments[payment].events.push((
        kind,
        answer["event"]["body"].as_str().unwrap().to_owned(),
        answer["event"]["signature"].as_str().unwrap().to_owned(),
    ));
    model
        .log
        .push(format!("Reverse payment #{payment} {action} deliver={deliver}"));
    if deliver {
        delivered(model, payment, kind, &answer["delivery"])?;
    }
    Ok(())
}

async fn replay(env: &Env, model: &mut Model, payment: usize, event: usize) -> Result<(), TestCaseError> {
    let (kind, body, signature) = model.payments[payment].events[event].clone();
    let answer = call(
        &env.client,
        Method::POST,
        &format!("{}/v1/payments/webhooks/{PROVIDER}", env.gateway),
        None,
        &[(SIGNATURE_HEADER, signature.as_str())],
        Bytes::from(body),
    )
    .await;
    model.log.push(format!("Replay payment #{payment} event {kind:?}"));
    let delivery = json!({"status": answer.status.as_u16(), "body": answer.json()});
    delivered(model, payment, kind, &delivery)
}

async fn request(
    env: &Env,
    model: &mut Model,
    account: usize,
    max_tokens: Option<u64>,
    words: u64,
    stream: bool,
) -> Result<(), TestCaseError> {
    let a = &model.accounts[account];
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": format!("[[sim:words={words}]] Tell me about ledgers.")}],
    });
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let before = a.balance;
    let answer = post_json(
        &env.client,
        &format!("{}/v1/chat/completions", env.gateway),
        Some(&a.inference_key),
        &body,
    )
    .await;
    model.log.push(format!(
        "Request account={account} max_tokens={max_tokens:?} words={words} stream={stream} (model balance {before}) -> {}",
        answer.status
    ));
    match answer.status {
        StatusCode::OK => {}
        StatusCode::PAYMENT_REQUIRED => {
            let code = answer.json()["error"]["code"].as_str().map(str::to_owned);
            check!(
                code.as_deref() == Some("insufficient_quota"),
                "402 without insufficient_quota: {}",
                answer.text()
            );
            // Refused only if the worst case could not be paid: a generous bound on the prompt
            // (≤ 200 tokens) plus the output asked (or the 16-token minimum when clamping).
            let output = max_tokens.unwrap_or(16);
            check!(
                before < cost_units(env, 200, i64::try_from(output).unwrap()),
                "402 although the balance {before} covers the worst case of max_tokens={output}"
            );
            return Ok(());
        }
        other => {
            return Err(TestCaseError::fail(format!(
                "request: unexpected {other}: {}",
                answer.text()
            )));
        }
    }
    let request_id = answer
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let usage = if stream {
        let text = answer.text();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
            .next_back()
            .unwrap_or(Value::Null)
    } else {
        answer.json()["usage"].clone()
    };
    let prompt = usage["prompt_tokens"].as_i64();
    let completion = usage["completion_tokens"].as_i64();
    let (Some(prompt), Some(completion)) = (prompt, completion) else {
        return Err(TestCaseError::fail(format!("200 without usage: {}", answer.text())));
    };
    if let Some(n) = max_tokens {
        check!(
            completion <= i64::try_from(n).unwrap(),
            "the reply has {completion} tokens, over max_tokens {n}"
        );
    }
    let cost = cost_units(env, prompt, completion);
    check!(
        cost <= before,
        "request {request_id} cost {cost} units but the account had {before}: an overdraft"
    );
    model.accounts[account].balance -= cost;
    model.requests.push(UsageSeen {
        account,
        request_id,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost,
    });
    Ok(())
}

async fn adjust(env: &Env, model: &mut Model, account: usize, cents: i64) -> Result<(), TestCaseError> {
    if cents == 0 {
        return Ok(());
    }
    // The operator acts on a settled database (see the report on operator debits racing
    // uncommitted usage): commit what the gateway has recorded first.
    env.usage.flush().await;
    let amount = cents * (UNITS_PER_USD / 100);
    let a = &model.accounts[account];
    let outcome = env
        .store
        .adjust_balance(
            &a.id,
            Usd::from_units(amount),
            "property test",
            router_one_core::ids::now_us(),
        )
        .await
        .map_err(|e| TestCaseError::fail(format!("adjust_balance: {e}")))?;
    model.log.push(format!(
        "Adjust account={account} {cents} cents (model balance {})",
        a.balance
    ));
    let refused = amount < 0 && -amount > a.balance;
    match outcome {
        AdjustOutcome::Applied { balance, .. } => {
            check!(
                !refused,
                "a debit of {amount} over the balance {} was applied",
                a.balance
            );
            model.accounts[account].balance += amount;
            check!(
                balance.units() == model.accounts[account].balance,
                "adjust: store says the balance is {} but the model {}",
                balance.units(),
                model.accounts[account].balance
            );
            // The follower applies it to the live budget within a second.
            wait_live(env, model, account).await?;
        }
        AdjustOutcome::InsufficientBalance { balance } => {
            check!(
                refused,
                "a debit of {amount} was refused with the balance {} (model {})",
                balance.units(),
                a.balance
            );
        }
        AdjustOutcome::UnknownAccount => return Err(TestCaseError::fail("adjust: unknown account")),
    }
    Ok(())
}

/// The live budget's available balance (limit − spent − reserved), units.
fn live_available(env: &Env, account_id: &str) -> Option<i64> {
    let budget = env.state.keys.account(account_id)?;
    let snap = budget.snapshot(router_one_core::ids::now_us());
    Some(snap.limit?.units() - snap.spent.units() - snap.reserved.units())
}

async fn wait_live(env: &Env, model: &Model, account: usize) -> Result<(), TestCaseError> {
    let a = &model.accounts[account];
    for _ in 0..60 {
        if live_available(env, &a.id) == Some(a.balance) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(TestCaseError::fail(format!(
        "account {account}: live budget {:?} never reached the model's balance {}",
        live_available(env, &a.id),
        a.balance
    )))
}

// ------------------------------------------------------------------------------------------
// The invariants.

async fn verify(env: &Env, model: &Model) -> Result<(), TestCaseError> {
    env.usage.flush().await;
    let pool = env.store.pool();
    let payments_by_id: HashMap<&str, &Payment> = model.payments.iter().map(|p| (p.payment_id.as_str(), p)).collect();

    // Usage records: one per successful request, as the client saw it.
    for r in &model.requests {
        let row = sqlx::query(
            "SELECT account_id, prompt_tokens, completion_tokens, cost_units FROM usage_records WHERE request_id = $1",
        )
        .bind(&r.request_id)
        .fetch_optional(pool)
        .await
        .unwrap();
        let Some(row) = row else {
            return Err(TestCaseError::fail(format!(
                "no usage record for request {}",
                r.request_id
            )));
        };
        let got: (String, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let want = (
            model.accounts[r.account].id.clone(),
            r.prompt_tokens,
            r.completion_tokens,
            r.cost,
        );
        check!(
            got == want,
            "usage record {}: stored {got:?}, the client saw {want:?}",
            r.request_id
        );
    }

    for (i, a) in model.accounts.iter().enumerate() {
        let balance: i64 = sqlx::query_scalar("SELECT balance_units FROM accounts WHERE id = $1")
            .bind(&a.id)
            .fetch_one(pool)
            .await
            .unwrap();
        let entries: Vec<(i64, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, kind, amount_units, reference FROM ledger_entries WHERE account_id = $1 ORDER BY id",
        )
        .bind(&a.id)
        .fetch_all(pool)
        .await
        .unwrap();
        let costs: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(cost_units), 0) FROM usage_records WHERE account_id = $1")
                .bind(&a.id)
                .fetch_one(pool)
                .await
                .unwrap();

        // (a) balance = Σ entries, and (c) no prefix of the ledger is negative.
        let mut running = 0i64;
        for (id, kind, amount, _) in &entries {
            running += amount;
            check!(
                running >= 0,
                "account {i}: the ledger goes negative ({running}) at entry {id} ({kind} {amount})"
            );
        }
        check!(
            balance == running,
            "account {i}: balance {balance} but Σ ledger {running}"
        );
        check!(balance >= 0, "account {i}: negative balance {balance}");

        // (b) Σ usage debits = Σ usage-record costs.
        let usage_debits: i64 = entries.iter().filter(|e| e.1 == "usage").map(|e| e.2).sum();
        check!(
            usage_debits == -costs,
            "account {i}: usage debits {usage_debits} but records cost {costs}"
        );
        let model_costs: i64 = model.requests.iter().filter(|r| r.account == i).map(|r| r.cost).sum();
        check!(
            costs == model_costs,
            "account {i}: records cost {costs}, the client saw {model_costs}"
        );

        // (d) top-ups = Σ token lines of paid sessions; commissions and reversals per payment.
        let token_lines: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(token_line_units), 0) FROM checkout_sessions WHERE account_id = $1 AND payment_id IS NOT NULL",
        )
        .bind(&a.id)
        .fetch_one(pool)
        .await
        .unwrap();
        let topups: i64 = entries.iter().filter(|e| e.1 == "topup").map(|e| e.2).sum();
        check!(
            topups == token_lines,
            "account {i}: top-ups {topups} but paid token lines {token_lines}"
        );

        let mut per_payment: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (id, kind, amount, reference) in &entries {
            if kind == "usage" || kind == "adjustment" {
                continue;
            }
            let Some(reference) = reference else {
                return Err(TestCaseError::fail(format!(
                    "account {i}: {kind} entry {id} names no payment"
                )));
            };
            let Some(p) = payments_by_id.get(reference.as_str()) else {
                return Err(TestCaseError::fail(format!(
                    "account {i}: {kind} entry {id} names unknown payment {reference}"
                )));
            };
            let count = per_payment.entry((kind.clone(), reference.clone())).or_default();
            *count += 1;
            check!(*count == 1, "account {i}: two {kind} entries for payment {reference}");
            match kind.as_str() {
                "topup" => {
                    check!(
                        p.account == i && *amount == p.credited,
                        "account {i}: topup {amount} for {reference}"
                    );
                }
                "commission" => {
                    let referred = &model.accounts[p.account];
                    check!(
                        referred.inviter == Some(i),
                        "account {i}: commission for {reference} of an account it did not refer"
                    );
                    let expected = p.credited * COMMISSION_PERCENT / 100;
                    check!(
                        *amount == expected,
                        "account {i}: commission {amount} for {reference}, expected {expected}"
                    );
                }
                "refund" | "chargeback" => {
                    check!(
                        p.account == i && -*amount <= p.credited && *amount < 0,
                        "account {i}: {kind} {amount} for {reference} credited {}",
                        p.credited
                    );
                }
                "commission_reversal" => {
                    check!(
                        p.referrer == Some(i) && -*amount <= p.commission && *amount < 0,
                        "account {i}: commission reversal {amount} for {reference} (commission {})",
                        p.commission
                    );
                }
                other => {
                    return Err(TestCaseError::fail(format!(
                        "account {i}: unexpected ledger kind {other}"
                    )));
                }
            }
        }
        // Every confirmed payment of a referred account earned its inviter exactly one commission.
        for p in model.payments.iter().filter(|p| p.state != GatewayState::Unconfirmed) {
            if p.referrer == Some(i) {
                check!(
                    per_payment.contains_key(&("commission".to_owned(), p.payment_id.clone())),
                    "account {i}: no commission for payment {}",
                    p.payment_id
                );
            }
            if p.account == i {
                check!(
                    per_payment.contains_key(&("topup".to_owned(), p.payment_id.clone())),
                    "account {i}: no topup for payment {}",
                    p.payment_id
                );
            }
        }

        // (e) the model.
        check!(
            balance == a.balance,
            "account {i}: balance {balance} but the model expects {}",
            a.balance
        );

        // The API shows the same balance.
        let shown = call(
            &env.client,
            Method::GET,
            &format!("{}/v1/account", env.gateway),
            Some(&a.management_key),
            &[],
            Bytes::new(),
        )
        .await;
        let shown_units = shown.json()["balance"].as_str().map(usd_units);
        check!(
            shown_units == Some(balance),
            "account {i}: GET /v1/account shows {}",
            shown.text()
        );

        // (f) the live budget (every non-usage entry was applied by the webhook's or the
        // follower's sync; usage is settled in memory before it is recorded).
        let live = live_available(env, &a.id);
        check!(
            live == Some(balance),
            "account {i}: live budget available {live:?} but balance {balance}"
        );
    }

    // Payments as stored agree with the model.
    for p in &model.payments {
        let row = sqlx::query(
            "SELECT account_id, credited_units, referrer_id, commission_units, status, reversed_units, \
             commission_reversed_units, session_id FROM payments WHERE provider = $1 AND payment_id = $2",
        )
        .bind(PROVIDER)
        .bind(&p.payment_id)
        .fetch_optional(pool)
        .await
        .unwrap();
        match (p.state, row) {
            (GatewayState::Unconfirmed, None) => {}
            (GatewayState::Unconfirmed, Some(_)) => {
                return Err(TestCaseError::fail(format!(
                    "payment {} stored but never confirmed",
                    p.payment_id
                )));
            }
            (_, None) => return Err(TestCaseError::fail(format!("payment {} missing", p.payment_id))),
            (state, Some(row)) => {
                let status: String = row.get(4);
                let want_status = match (state, p.reversal_kind) {
                    (GatewayState::Paid, _) => "paid",
                    (_, Some(EventKind::ChargedBack)) => "charged_back",
                    _ => "refunded",
                };
                let got = (
                    row.get::<String, _>(0),
                    row.get::<i64, _>(1),
                    row.get::<Option<String>, _>(2),
                    row.get::<i64, _>(3),
                    status,
                    row.get::<i64, _>(5),
                    row.get::<i64, _>(6),
                    row.get::<String, _>(7),
                );
                let want = (
                    model.accounts[p.account].id.clone(),
                    p.credited,
                    p.referrer.map(|r| model.accounts[r].id.clone()),
                    p.commission,
                    want_status.to_owned(),
                    p.reversed,
                    p.commission_reversed,
                    p.session_id.clone(),
                );
                check!(
                    got == want,
                    "payment {}: stored {got:?}, expected {want:?}",
                    p.payment_id
                );
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------

#[test]
fn ledger_balances_and_usage_agree_under_random_operations() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = runtime.block_on(start());
    let cases = std::env::var("LEDGER_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 18..=26), |ops| {
        runtime.block_on(run_case(&env, ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
