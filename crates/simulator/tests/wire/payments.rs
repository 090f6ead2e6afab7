//! The simulated payment provider: sessions, paying, refunds and chargebacks, signed webhooks.

use std::sync::{Arc, Mutex};

use hyper::service::service_fn;
use router_one_core::webhook::{DEFAULT_TOLERANCE_SECS, verify};
use router_one_simulator::PaymentSimConfig;

use super::*;

const KEY: (&str, &str) = ("authorization", "Bearer sim-pay-key");
const SECRET: &[u8] = b"whsec_router_one_simulated";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn call(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> (StatusCode, Value) {
    let response = send(addr, path, headers, &body.to_string()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn open(addr: SocketAddr, session_id: &str, webhook_url: &str) -> Value {
    let (status, body) = call(
        addr,
        "/payments/v1/sessions",
        &[KEY],
        &json!({"session_id": session_id, "amount": "12.50", "currency": "EUR", "channel": "card",
            "webhook_url": webhook_url}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The path part of a session's payment URL.
fn pay_path(session: &Value) -> String {
    let url = session["url"].as_str().unwrap();
    let after_scheme = url.strip_prefix("http://").unwrap();
    after_scheme[after_scheme.find('/').unwrap()..].to_owned()
}

/// Checks the event's signature and returns its parsed body.
fn verified(answer: &Value) -> Value {
    let body = answer["event"]["body"].as_str().unwrap();
    let signature = answer["event"]["signature"].as_str().unwrap();
    verify(&[SECRET], signature, body.as_bytes(), now(), DEFAULT_TOLERANCE_SECS).unwrap();
    serde_json::from_str(body).unwrap()
}

#[derive(Debug, Clone)]
struct Delivery {
    signature: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A webhook receiver that records what it gets and answers `{"received":true}`.
async fn receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/payments/webhooks/simulated",
        listener.local_addr().unwrap()
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let header = |name: &str| request.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
                        let signature = header("x-router-one-signature");
                        let content_type = header("content-type");
                        let body = request.into_body().collect().await.unwrap().to_bytes().to_vec();
                        log.lock().unwrap().push(Delivery {
                            signature,
                            content_type,
                            body,
                        });
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                            br#"{"received":true,"outcome":"credited"}"#,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn open_and_pay_without_delivery_signs_the_event() {
    let addr = start(SimConfig::default()).await;
    let session = open(addr, "cs_abc", "http://127.0.0.1:9/hook").await;
    let sps = session["id"].as_str().unwrap().to_owned();
    assert!(sps.starts_with("sps_"), "{session}");
    assert_eq!(session["status"], "open");
    assert_eq!(session["url"], format!("http://sim/payments/pay/{sps}"));

    // Opening the same checkout session again answers the same payment session.
    let again = open(addr, "cs_abc", "http://127.0.0.1:9/hook").await;
    assert_eq!(again["id"], session["id"]);

    let (status, answer) = call(addr, &format!("{}?deliver=false", pay_path(&session)), &[], &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["delivery"].is_null());
    let payment_id = answer["payment_id"].as_str().unwrap();
    assert!(payment_id.starts_with("pay_"));
    let event = verified(&answer);
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["type"], "payment.succeeded");
    assert!((event["created"].as_i64().unwrap() - now()).abs() <= 5);
    assert_eq!(
        event["data"],
        json!({"payment_id": payment_id, "session_id": "cs_abc", "amount": "12.50", "currency": "EUR"})
    );
    // A tampered body or another secret does not verify.
    let body = answer["event"]["body"].as_str().unwrap().replace("12.50", "99.50");
    let signature = answer["event"]["signature"].as_str().unwrap();
    assert!(verify(&[SECRET], signature, body.as_bytes(), now(), DEFAULT_TOLERANCE_SECS).is_err());
    let original = answer["event"]["body"].as_str().unwrap().as_bytes();
    assert!(verify(&[b"whsec_other"], signature, original, now(), DEFAULT_TOLERANCE_SECS).is_err());

    // Paying twice is a conflict; an unknown session is 404.
    let (status, body) = call(addr, &pay_path(&session), &[], &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = call(addr, "/payments/pay/sps_nope", &[], &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pay_delivers_the_signed_event() {
    let addr = start(SimConfig::default()).await;
    let (url, seen) = receiver().await;
    let session = open(addr, "cs_delivered", &url).await;
    let (status, answer) = call(addr, &pay_path(&session), &[], &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["delivery"],
        json!({"status": 200, "body": {"received": true, "outcome": "credited"}})
    );
    let deliveries = seen.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
    assert_eq!(delivery.body, answer["event"]["body"].as_str().unwrap().as_bytes());
    let signature = delivery.signature.as_deref().unwrap();
    assert_eq!(signature, answer["event"]["signature"].as_str().unwrap());
    verify(&[SECRET], signature, &delivery.body, now(), DEFAULT_TOLERANCE_SECS).unwrap();
}

#[tokio::test]
async fn refund_and_chargeback_send_their_events() {
    let addr = start(SimConfig::default()).await;
    let (url, seen) = receiver().await;
    let session = open(addr, "cs_reversed", &url).await;
    let (_, paid) = call(addr, &format!("{}?deliver=false", pay_path(&session)), &[], &json!({})).await;
    let payment_id = paid["payment_id"].as_str().unwrap().to_owned();

    let refund = format!("/payments/v1/payments/{payment_id}/refund");
    let (status, first) = call(addr, &refund, &[KEY], &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["payment_id"], payment_id.as_str());
    assert_eq!(first["delivery"]["status"], 200);
    let event = verified(&first);
    assert_eq!(event["type"], "payment.refunded");
    assert_eq!(
        event["data"],
        json!({"payment_id": payment_id, "session_id": "cs_reversed"})
    );

    // Refunding again re-sends the same event (a provider's duplicate delivery).
    let (status, second) = call(addr, &format!("{refund}?deliver=false"), &[KEY], &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(second["delivery"].is_null());
    assert_eq!(second["event"]["body"], first["event"]["body"]);
    verified(&second);

    let chargeback = format!("/payments/v1/payments/{payment_id}/chargeback");
    let (status, answer) = call(addr, &chargeback, &[KEY], &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let event = verified(&answer);
    assert_eq!(event["type"], "payment.charged_back");
    assert_ne!(event["id"], verified(&first)["id"]);

    let deliveries = seen.lock().unwrap().clone();
    assert_eq!(
        deliveries.len(),
        2,
        "refund and chargeback delivered, the deliver=false repeat not"
    );
    assert_eq!(deliveries[0].body, first["event"]["body"].as_str().unwrap().as_bytes());
    assert_eq!(deliveries[1].body, answer["event"]["body"].as_str().unwrap().as_bytes());

    let (status, _) = call(addr, "/payments/v1/payments/pay_unknown/refund", &[KEY], &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_api_key_is_401() {
    let addr = start(SimConfig {
        payments: PaymentSimConfig {
            api_key: "custom-key".into(),
            webhook_secret: "whsec_custom".into(),
        },
        ..SimConfig::default()
    })
    .await;
    let request = json!({"session_id": "cs_1", "amount": "1.00", "currency": "USD", "channel": "card",
        "webhook_url": "http://127.0.0.1:9/hook"});
    for headers in [&[][..], &[KEY][..], &[("authorization", "Bearer ")][..]] {
        let (status, body) = call(addr, "/payments/v1/sessions", headers, &request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let (status, session) = call(
        addr,
        "/payments/v1/sessions",
        &[("authorization", "Bearer custom-key")],
        &request,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, paid) = call(addr, &format!("{}?deliver=false", pay_path(&session)), &[], &json!({})).await;
    let signature = paid["event"]["signature"].as_str().unwrap();
    let body = paid["event"]["body"].as_str().unwrap().as_bytes();
    verify(&[b"whsec_custom"], signature, body, now(), DEFAULT_TOLERANCE_SECS).unwrap();
    let refund = format!("/payments/v1/payments/{}/refund", paid["payment_id"].as_str().unwrap());
    let (status, _) = call(addr, &refund, &[KEY], &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_session_requests_are_400_and_unreachable_webhooks_are_reported() {
    let addr = start(SimConfig::default()).await;
    let (status, body) = call(
        addr,
        "/payments/v1/sessions",
        &[KEY],
        &json!({"session_id": "cs_1", "amount": 12.5, "currency": "USD", "channel": "card",
            "webhook_url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Nothing listens on a port just released.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let session = open(addr, "cs_unreachable", &closed).await;
    let (status, answer) = call(addr, &pay_path(&session), &[], &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["delivery"]["status"].is_null());
    assert!(answer["delivery"]["error"].is_string(), "{answer}");
}

#[tokio::test]
async fn pay_page_and_ids_unique_across_servers() {
    let mut payment_ids = Vec::new();
    for _ in 0..2 {
        let addr = start(SimConfig::default()).await;
        let session = open(addr, "cs_same", "http://127.0.0.1:9/hook").await;
        // A human payer gets a page with a pay button.
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::get(pay_path(&session))
            .header("host", "sim")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let page = response.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8(page.to_vec()).unwrap();
        assert!(
            page.contains("12.50 EUR") && page.contains("<form method=post"),
            "{page}"
        );

        let (_, paid) = call(addr, &format!("{}?deliver=false", pay_path(&session)), &[], &json!({})).await;
        payment_ids.push(paid["payment_id"].as_str().unwrap().to_owned());
    }
    // A restarted simulator must not reuse a payment id a gateway already credited.
    assert_ne!(payment_ids[0], payment_ids[1]);
}
