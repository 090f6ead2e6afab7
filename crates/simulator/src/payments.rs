//! The simulated payment provider (`docs/accounts-and-billing.md`, "The simulated payment
//! provider"): a merchant API that opens payment sessions, a payer endpoint that pays one, and
//! refunds and chargebacks; each payment event is signed with
//! [`router_one_core::webhook::sign`] and POSTed to the session's `webhook_url`. A payer who
//! pays on the pay page (a browser's form POST) is then sent back to the session's `return_url`
//! with `303 See Other`, after the webhook was delivered, so the page they land on already shows
//! the payment; API callers get the JSON answer.
//!
//! State lives in one mutex that only these endpoints take (payments are rare); it is never held
//! across an await. Ids carry a random per-server prefix so that a restarted simulator never
//! reuses a payment id a gateway has already credited.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use router_one_core::webhook::{SIGNATURE_HEADER, sign};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::SimState;
use crate::body::SimBody;
use crate::exchange;

/// How long one webhook delivery may take, answer included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a receiver's answer kept for the `delivery.body` field.
const MAX_DELIVERY_ANSWER: usize = 64 * 1024;

/// The payment provider's share of the server state.
pub(crate) struct PaymentState {
    book: Mutex<Book>,
    /// Random per server: part of every id.
    nonce: u64,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for PaymentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentState")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl PaymentState {
    /// Empty state, with a fresh id prefix and a client for webhook deliveries.
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(DELIVERY_TIMEOUT));
        connector.set_nodelay(true);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        PaymentState {
            book: Mutex::new(Book::default()),
            nonce: std::collections::hash_map::RandomState::new().hash_one(nanos),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // The book is consistent after every statement that changes it; a panic elsewhere while
        // it was held leaves nothing half-written.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sessions and payments, by their ids.
#[derive(Debug, Default)]
struct Book {
    sessions: HashMap<String, Session>,
    payments: HashMap<String, Payment>,
}

#[derive(Debug)]
struct Session {
    session_id: String,
    amount: String,
    currency: String,
    channel: String,
    webhook_url: String,
    /// Where the payer's browser goes after paying on the pay page.
    return_url: Option<String>,
    status: &'static str,
    payment_id: Option<String>,
}

#[derive(Debug)]
struct Payment {
    session_id: String,
    webhook_url: String,
    /// The `payment.refunded` event body, once refunded (re-sent as is on a repeat).
    refunded: Option<String>,
    /// The `payment.charged_back` event body, once charged back.
    charged_back: Option<String>,
}

/// What the gateway's adapter sends to open a session.
#[derive(Debug, Deserialize)]
struct OpenSession {
    session_id: String,
    amount: String,
    currency: String,
    channel: String,
    webhook_url: String,
    #[serde(default)]
    return_url: Option<String>,
}

#[derive(Serialize)]
struct Event<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    created: u64,
    data: EventData<'a>,
}

#[derive(Serialize)]
struct EventData<'a> {
    payment_id: &'a str,
    session_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
}

/// Serves every `/payments/…` request.
pub(crate) async fn handle(request: Request<Incoming>, state: &SimState) -> Response<SimBody> {
    let path = request.uri().path().to_owned();
    let post = request.method() == Method::POST;
    let rest = path.trim_start_matches("/payments/");
    let segments: Vec<&str> = rest.split('/').collect();
    match (post, segments.as_slice()) {
        (true, ["v1", "sessions"]) => open_session(request, state).await,
        (false, ["pay", sps]) if request.method() == Method::GET => pay_page(state, sps),
        (true, ["pay", sps]) => pay(&request, state, sps).await,
        (true, ["v1", "payments", pay_id, action @ ("refund" | "chargeback")]) => {
            reverse(&request, state, pay_id, *action == "refund").await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no route for {} {path}", request.method()),
        ),
    }
}

/// `POST /payments/v1/sessions`.
async fn open_session(request: Request<Incoming>, state: &SimState) -> Response<SimBody> {
    if !authorized(&request, state) {
        return error(StatusCode::UNAUTHORIZED, "invalid or missing API key");
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let Some(body) = exchange::read_body(request.into_body()).await else {
        return error(StatusCode::BAD_REQUEST, "request body too large or incomplete");
    };
    let open: OpenSession = match serde_json::from_slice(&body) {
        Ok(open) => open,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid session request: {e}")),
    };
    if let Some(problem) = invalid(&open) {
        return error(StatusCode::BAD_REQUEST, problem);
    }
    let mut book = state.payments.book();
    // Opening the same checkout session again (a retry) answers the session already opened.
    let existing = book
        .sessions
        .iter()
        .find(|(_, s)| s.session_id == open.session_id)
        .map(|(id, s)| (id.clone(), s.status));
    let (id, status) = existing.unwrap_or_else(|| {
        let id = new_id(state, "sps");
        book.sessions.insert(
            id.clone(),
            Session {
                session_id: open.session_id,
                amount: open.amount,
                currency: open.currency,
                channel: open.channel,
                webhook_url: open.webhook_url,
                return_url: open.return_url,
                status: "open",
                payment_id: None,
            },
        );
        (id, "open")
    });
    drop(book);
    let url = format!("http://{host}/payments/pay/{id}");
    exchange::json(
        StatusCode::OK,
        json!({"id": id, "object": "payment_session", "url": url, "status": status}).to_string(),
    )
}

/// Why an open-session request is refused, if it is.
fn invalid(open: &OpenSession) -> Option<&'static str> {
    let amount_ok = {
        let (whole, frac) = open.amount.split_once('.').unwrap_or((&open.amount, ""));
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && !(open.amount.contains('.') && frac.is_empty())
    };
    if open.session_id.trim().is_empty() {
        Some("`session_id` is required")
    } else if !amount_ok {
        Some("`amount` must be a decimal string such as \"12.50\"")
    } else if open.currency.len() != 3 || !open.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Some("`currency` must be an upper-case ISO 4217 code")
    } else if !is_http_url(&open.webhook_url) {
        Some("`webhook_url` must be an http(s) URL")
    } else if open.return_url.as_deref().is_some_and(|url| !is_http_url(url)) {
        Some("`return_url` must be an http(s) URL")
    } else {
        None
    }
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && !url.bytes().any(|b| b.is_ascii_control())
}

/// `GET /payments/pay/{sps_id}`: a page with a pay button, for a human payer (and a way back
/// without paying, when the session has a return URL).
fn pay_page(state: &SimState, sps: &str) -> Response<SimBody> {
    let book = state.payments.book();
    let Some(session) = book.sessions.get(sps) else {
        return error(StatusCode::NOT_FOUND, "no such payment session");
    };
    let html = format!(
        "<!doctype html><meta charset=utf-8><link rel=icon href=\"data:,\"><title>Simulated payment</title>\
         <h1>Simulated payment</h1><p>{} {} by {} for checkout session <code>{}</code>: {}.</p>\
         <form method=post action=\"/payments/pay/{}\"><button>Pay</button></form>{}",
        escape(&session.amount),
        escape(&session.currency),
        escape(&session.channel),
        escape(&session.session_id),
        session.status,
        escape(sps),
        session.return_url.as_deref().map_or_else(String::new, |url| format!(
            "<p><a href=\"{}\">Back without paying</a></p>",
            escape(url)
        )),
    );
    let mut response = Response::new(SimBody::full(html));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `POST /payments/pay/{sps_id}`: the payer pays. A browser (the pay page's form) is sent to
/// the session's return URL once the webhook has been delivered; anyone else gets the JSON.
async fn pay(request: &Request<Incoming>, state: &SimState, sps: &str) -> Response<SimBody> {
    let from_browser = is_form_post(request);
    let prepared = {
        let mut book = state.payments.book();
        let Some(session) = book.sessions.get_mut(sps) else {
            return error(StatusCode::NOT_FOUND, "no such payment session");
        };
        let back = session.return_url.clone().filter(|_| from_browser);
        if let Some(paid) = &session.payment_id {
            // A payer pressing Pay twice goes back to a page that already shows the payment.
            return match back {
                Some(url) => see_other(&url),
                None => error(StatusCode::CONFLICT, &format!("session already paid ({paid})")),
            };
        }
        let payment_id = new_id(state, "pay");
        let event_id = new_id(state, "evt");
        let body = serde_json::to_string(&Event {
            id: &event_id,
            kind: "payment.succeeded",
            created: exchange::unix_now(),
            data: EventData {
                payment_id: &payment_id,
                session_id: &session.session_id,
                amount: Some(&session.amount),
                currency: Some(&session.currency),
            },
        });
        let Ok(body) = body else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "could not write the event");
        };
        session.payment_id = Some(payment_id.clone());
        session.status = "paid";
        let payment = Payment {
            session_id: session.session_id.clone(),
            webhook_url: session.webhook_url.clone(),
            refunded: None,
            charged_back: None,
        };
        let webhook_url = payment.webhook_url.clone();
        book.payments.insert(payment_id.clone(), payment);
        (payment_id, body, webhook_url, back)
    };
    let (payment_id, body, webhook_url, back) = prepared;
    // Delivered (and answered) before the browser is sent back, so the gateway has credited the
    // account by the time the return page loads.
    let answer = send_event(state, &payment_id, body, &webhook_url, deliver(request)).await;
    match back {
        Some(url) => see_other(&url),
        None => answer,
    }
}

/// Whether the request is an HTML form's POST, as a browser sends the pay page's form.
fn is_form_post(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start().to_ascii_lowercase())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded") || v.starts_with("multipart/form-data"))
}

/// `303 See Other` to `url` (a return URL checked when the session was opened).
fn see_other(url: &str) -> Response<SimBody> {
    let Ok(location) = HeaderValue::from_str(url) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session's return URL is not a valid header",
        );
    };
    let mut response = Response::new(SimBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().insert(http::header::LOCATION, location);
    response
}

/// `POST /payments/v1/payments/{pay_id}/refund` or `/chargeback`.
async fn reverse(request: &Request<Incoming>, state: &SimState, pay_id: &str, refund: bool) -> Response<SimBody> {
    if !authorized(request, state) {
        return error(StatusCode::UNAUTHORIZED, "invalid or missing API key");
    }
    let prepared = {
        let mut book = state.payments.book();
        let Some(payment) = book.payments.get_mut(pay_id) else {
            return error(StatusCode::NOT_FOUND, "no such payment");
        };
        let kind = if refund {
            "payment.refunded"
        } else {
            "payment.charged_back"
        };
        let slot = if refund {
            &mut payment.refunded
        } else {
            &mut payment.charged_back
        };
        let body = match slot {
            Some(body) => body.clone(),
            None => {
                let event_id = new_id(state, "evt");
                let body = serde_json::to_string(&Event {
                    id: &event_id,
                    kind,
                    created: exchange::unix_now(),
                    data: EventData {
                        payment_id: pay_id,
                        session_id: &payment.session_id,
                        amount: None,
                        currency: None,
                    },
                });
                let Ok(body) = body else {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "could not write the event");
                };
                *slot = Some(body.clone());
                body
            }
        };
        let webhook_url = payment.webhook_url.clone();
        let session_id = payment.session_id.clone();
        if let Some(session) = book.sessions.values_mut().find(|s| s.session_id == session_id) {
            session.status = if refund { "refunded" } else { "charged_back" };
        }
        (body, webhook_url)
    };
    let (body, webhook_url) = prepared;
    send_event(state, pay_id, body, &webhook_url, deliver(request)).await
}

/// Signs `body` now, delivers it unless told not to, and answers with both.
async fn send_event(
    state: &SimState,
    payment_id: &str,
    body: String,
    webhook_url: &str,
    deliver: bool,
) -> Response<SimBody> {
    let now = i64::try_from(exchange::unix_now()).unwrap_or(i64::MAX);
    let signature = sign(state.config.payments.webhook_secret.as_bytes(), now, body.as_bytes());
    let delivery = if deliver {
        deliver_event(state, webhook_url, &body, &signature).await
    } else {
        Value::Null
    };
    exchange::json(
        StatusCode::OK,
        json!({
            "payment_id": payment_id,
            "event": {"body": body, "signature": signature},
            "delivery": delivery,
        })
        .to_string(),
    )
}

/// POSTs one signed event to the webhook URL: `{status, body}`, or `{status: null, body: null,
/// error}` if no answer came.
async fn deliver_event(state: &SimState, url: &str, body: &str, signature: &str) -> Value {
    let request = Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(http::header::USER_AGENT, "router-one-simulator/payments")
        .body(Full::new(Bytes::from(body.to_owned())));
    let request = match request {
        Ok(request) => request,
        Err(e) => return failed(&format!("invalid webhook URL: {e}")),
    };
    let exchange = async {
        let response = state
            .payments
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_DELIVERY_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    match tokio::time::timeout(DELIVERY_TIMEOUT, exchange).await {
        Err(_) => failed("webhook delivery timed out"),
        Ok(Err(e)) => failed(&e),
        Ok(Ok((status, bytes))) => {
            let body = serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            json!({"status": status, "body": body})
        }
    }
}

fn failed(message: &str) -> Value {
    json!({"status": null, "body": null, "error": message})
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Whether the request carries `authorization: Bearer <the configured API key>`.
fn authorized(request: &Request<Incoming>, state: &SimState) -> bool {
    let expected = &state.config.payments.api_key;
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .and_then(|_| v.get(7..))
        })
        .is_some_and(|token| !expected.is_empty() && token.trim() == expected)
}

/// Whether to deliver the event: yes unless the query says `deliver=false` (or `0`).
fn deliver(request: &Request<Incoming>) -> bool {
    !request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| matches!(pair, "deliver=false" | "deliver=0"))
}

/// A fresh id: `<prefix>_<server nonce><counter>`.
fn new_id(state: &SimState, prefix: &str) -> String {
    format!("{prefix}_{:016x}{:06}", state.payments.nonce, state.next_id())
}

/// A JSON error, `{"error": {"message", "type"}}`.
fn error(status: StatusCode, message: &str) -> Response<SimBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        404 => "not_found",
        409 => "conflict",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    exchange::json(status, json!({"error": {"message": message, "type": kind}}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(amount: &str) -> OpenSession {
        OpenSession {
            session_id: "cs_1".into(),
            amount: amount.into(),
            currency: "USD".into(),
            channel: "card".into(),
            webhook_url: "http://127.0.0.1:1/hook".into(),
            return_url: None,
        }
    }

    #[test]
    fn amounts_must_be_decimal_strings() {
        for good in ["1", "12.50", "0.001", "3176"] {
            assert_eq!(invalid(&open(good)), None, "{good}");
        }
        for bad in ["", ".5", "1.", "-1", "1e3", "1,5", "1.2.3", " 1"] {
            assert!(invalid(&open(bad)).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn a_return_url_must_be_http() {
        let with = |url: &str| OpenSession {
            return_url: Some(url.into()),
            ..open("1")
        };
        assert_eq!(invalid(&with("http://127.0.0.1:8080/console/top-up/cs_1")), None);
        assert_eq!(invalid(&with("https://router.example/console/top-up/cs_1")), None);
        for bad in ["javascript:alert(1)", "/console", "http://a/\r\nSet-Cookie: x=1"] {
            assert!(invalid(&with(bad)).is_some(), "{bad:?}");
        }
    }
}
