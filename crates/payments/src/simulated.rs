//! The simulated provider (`kind = "simulated"`): the simulator's payment API
//! (`docs/accounts-and-billing.md`, "The simulated payment provider"). `open` creates a payment
//! session (with the payer's return URL, where the pay page sends the browser back after paying);
//! its webhooks carry `x-router-one-signature` and a `payment.*` event.

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use router_one_core::billing::{PaymentEvent, PaymentEventKind};
use router_one_core::webhook::{self, DEFAULT_TOLERANCE_SECS, SIGNATURE_HEADER};

use crate::client::{HttpClient, bearer, refused};
use crate::provider::{OpenPayment, OpenedPayment, PaymentError, PaymentProvider, WebhookError};

/// The simulated payment provider's adapter.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    name: String,
    base_url: String,
    api_key: String,
    webhook_secret: String,
    client: HttpClient,
}

impl SimulatedProvider {
    /// An adapter named `name` (its webhook path segment) for the simulator at `base_url`
    /// (`http://127.0.0.1:9090`, no trailing `/payments`), with its API key and webhook secret.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        webhook_secret: impl Into<String>,
    ) -> Self {
        SimulatedProvider {
            name: name.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: api_key.into(),
            webhook_secret: webhook_secret.into(),
            client: HttpClient::new(),
        }
    }
}

#[derive(Serialize)]
struct OpenRequest<'a> {
    session_id: &'a str,
    /// A decimal string, never a float.
    amount: String,
    currency: &'a str,
    channel: &'a str,
    webhook_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_url: Option<&'a str>,
}

#[derive(Deserialize)]
struct OpenAnswer {
    id: String,
    url: String,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct SucceededData {
    payment_id: String,
    session_id: String,
    /// A decimal string, read exactly (a JSON number is refused: no float ever holds money).
    amount: String,
    currency: String,
}

#[derive(Deserialize)]
struct ReversedData {
    payment_id: String,
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, payment: &OpenPayment<'_>) -> Result<OpenedPayment, PaymentError> {
        let request = OpenRequest {
            session_id: payment.session_id,
            amount: payment.amount.to_string(),
            currency: payment.currency,
            channel: payment.channel,
            webhook_url: payment.webhook_url,
            return_url: payment.return_url,
        };
        let body = serde_json::to_vec(&request).map_err(|e| PaymentError::NotConfigured(e.to_string()))?;
        let url = format!("{}/payments/v1/sessions", self.base_url);
        let auth = bearer(&self.api_key);
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let (status, answer) = self.client.post(&url, &headers, body).await?;
        if !status.is_success() {
            return Err(refused(status, &answer));
        }
        let opened: OpenAnswer = serde_json::from_slice(&answer).map_err(|e| PaymentError::Refused {
            status: status.as_u16(),
            message: format!("unreadable answer: {e}"),
        })?;
        Ok(OpenedPayment {
            provider_session_id: opened.id,
            payment_url: opened.url,
        })
    }

    fn read_webhook(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now_s: i64,
    ) -> Result<Option<PaymentEvent>, WebhookError> {
        let signature = crate::signature_header(headers, SIGNATURE_HEADER)?;
        webhook::verify(
            &[self.webhook_secret.as_bytes()],
            signature,
            body,
            now_s,
            DEFAULT_TOLERANCE_SECS,
        )?;
        parse_event(body)
    }
}

/// Reads an authentic event body.
fn parse_event(body: &[u8]) -> Result<Option<PaymentEvent>, WebhookError> {
    let event: Event = serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let malformed = |e: serde_json::Error| WebhookError::Malformed(format!("{} event: {e}", event.kind));
    let reversed = |kind: PaymentEventKind| -> Result<Option<PaymentEvent>, WebhookError> {
        let data: ReversedData = serde_json::from_value(event.data.clone()).map_err(malformed)?;
        Ok(Some(PaymentEvent {
            payment_id: data.payment_id,
            kind,
        }))
    };
    match event.kind.as_str() {
        "payment.succeeded" => {
            let data: SucceededData = serde_json::from_value(event.data.clone()).map_err(malformed)?;
            let amount = Decimal::from_str_exact(&data.amount)
                .map_err(|e| WebhookError::Malformed(format!("amount {:?}: {e}", data.amount)))?;
            Ok(Some(PaymentEvent {
                payment_id: data.payment_id,
                kind: PaymentEventKind::Succeeded {
                    session_id: data.session_id,
                    amount,
                    currency: data.currency.to_ascii_uppercase(),
                },
            }))
        }
        "payment.refunded" => reversed(PaymentEventKind::Refunded),
        "payment.charged_back" => reversed(PaymentEventKind::ChargedBack),
        _ => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::str::FromStr;

    use http::{HeaderMap, HeaderValue};
    use router_one_core::webhook::{SignatureError, sign};
    use router_one_simulator::{PaymentSimConfig, SimConfig};
    use tokio::net::TcpListener;

    use super::*;

    const SECRET: &str = "whsec_router_one_simulated";
    const T: i64 = 1_700_000_000;

    fn provider() -> SimulatedProvider {
        SimulatedProvider::new("simulated", "http://127.0.0.1:9", "sim-pay-key", SECRET)
    }

    fn signed(body: &str, secret: &str, t: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = sign(secret.as_bytes(), t, body.as_bytes());
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&value).unwrap());
        headers
    }

    const SUCCEEDED: &str = r#"{"id":"evt_1","type":"payment.succeeded","created":1700000000,"data":{"payment_id":"pay_1","session_id":"cs_1","amount":"92.10","currency":"EUR"}}"#;

    fn read(body: &str) -> Result<Option<PaymentEvent>, WebhookError> {
        provider().read_webhook(&signed(body, SECRET, T), body.as_bytes(), T)
    }

    #[test]
    fn signature_accepted() {
        let event = read(SUCCEEDED).unwrap().unwrap();
        assert_eq!(event.payment_id, "pay_1");
    }

    #[test]
    fn signature_forged_stale_or_missing_is_refused() {
        let p = provider();
        let forged = p.read_webhook(&signed(SUCCEEDED, "whsec_other", T), SUCCEEDED.as_bytes(), T);
        assert!(matches!(
            forged,
            Err(WebhookError::Signature(SignatureError::BadSignature))
        ));
        let tampered = SUCCEEDED.replace("92.10", "920.10");
        let tampered = p.read_webhook(&signed(SUCCEEDED, SECRET, T), tampered.as_bytes(), T);
        assert!(matches!(
            tampered,
            Err(WebhookError::Signature(SignatureError::BadSignature))
        ));
        let stale = p.read_webhook(&signed(SUCCEEDED, SECRET, T), SUCCEEDED.as_bytes(), T + 301);
        assert!(matches!(
            stale,
            Err(WebhookError::Signature(SignatureError::TimestampTooOld { .. }))
        ));
        let missing = p.read_webhook(&HeaderMap::new(), SUCCEEDED.as_bytes(), T);
        assert!(matches!(
            missing,
            Err(WebhookError::Signature(SignatureError::MissingHeader))
        ));
        // Stripe's header name is not this provider's.
        let mut other = HeaderMap::new();
        other.insert(
            "stripe-signature",
            HeaderValue::from_str(&sign(SECRET.as_bytes(), T, SUCCEEDED.as_bytes())).unwrap(),
        );
        let wrong_header = p.read_webhook(&other, SUCCEEDED.as_bytes(), T);
        assert!(matches!(
            wrong_header,
            Err(WebhookError::Signature(SignatureError::MissingHeader))
        ));
    }

    #[test]
    fn every_event_type_is_read() {
        assert_eq!(
            read(SUCCEEDED).unwrap(),
            Some(PaymentEvent {
                payment_id: "pay_1".into(),
                kind: PaymentEventKind::Succeeded {
                    session_id: "cs_1".into(),
                    amount: Decimal::from_str("92.10").unwrap(),
                    currency: "EUR".into(),
                },
            })
        );
        let refunded = r#"{"id":"evt_2","type":"payment.refunded","created":1700000000,"data":{"payment_id":"pay_1","session_id":"cs_1"}}"#;
        assert_eq!(
            read(refunded).unwrap(),
            Some(PaymentEvent {
                payment_id: "pay_1".into(),
                kind: PaymentEventKind::Refunded
            })
        );
        let charged_back = r#"{"id":"evt_3","type":"payment.charged_back","created":1700000000,"data":{"payment_id":"pay_1","session_id":"cs_1"}}"#;
        assert_eq!(
            read(charged_back).unwrap(),
            Some(PaymentEvent {
                payment_id: "pay_1".into(),
                kind: PaymentEventKind::ChargedBack
            })
        );
        let other = r#"{"id":"evt_4","type":"payment.pending","created":1700000000,"data":{}}"#;
        assert_eq!(read(other).unwrap(), None);
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let body = SUCCEEDED.replace("92.10", "0.1000000000000000000000000001");
        let Some(PaymentEvent {
            kind: PaymentEventKind::Succeeded { amount, .. },
            ..
        }) = read(&body).unwrap()
        else {
            panic!("succeeded expected");
        };
        assert_eq!(amount.to_string(), "0.1000000000000000000000000001");
    }

    #[test]
    fn authentic_but_malformed_events_are_refused() {
        for body in [
            "not json",
            r#"{"id":"evt_1","type":"payment.succeeded","created":1,"data":{"payment_id":"pay_1"}}"#,
            &SUCCEEDED.replace(r#""92.10""#, "92.10"),
            &SUCCEEDED.replace(r#""92.10""#, r#""92,10""#),
            r#"{"id":"evt_2","type":"payment.refunded","created":1,"data":{"session_id":"cs_1"}}"#,
        ] {
            assert!(matches!(read(body), Err(WebhookError::Malformed(_))), "{body}");
        }
    }

    async fn simulator(config: SimConfig) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(router_one_simulator::serve(listener, config));
        format!("http://{addr}")
    }

    fn payment<'a>(amount: &str, webhook_url: &'a str) -> OpenPayment<'a> {
        OpenPayment {
            session_id: "cs_sim_1",
            account_id: "acct_1",
            amount: Decimal::from_str(amount).unwrap(),
            currency: "EUR",
            minor_units: 2,
            channel: "card",
            webhook_url,
            return_url: None,
        }
    }

    #[tokio::test]
    async fn open_and_pay_against_the_simulator() {
        let base = simulator(SimConfig::default()).await;
        let p = SimulatedProvider::new("simulated", format!("{base}/"), "sim-pay-key", SECRET);
        let opened = p.open(&payment("12.50", "http://127.0.0.1:9/hook")).await.unwrap();
        assert!(opened.provider_session_id.starts_with("sps_"));
        assert!(
            opened
                .payment_url
                .ends_with(&format!("/payments/pay/{}", opened.provider_session_id))
        );

        // The payer pays; the event it would deliver is read back by the adapter.
        let pay_url = format!("{}?deliver=false", opened.payment_url);
        let (status, answer) = p.client.post(&pay_url, &[], Vec::new()).await.unwrap();
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        let body = answer["event"]["body"].as_str().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(answer["event"]["signature"].as_str().unwrap()).unwrap(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let event = p.read_webhook(&headers, body.as_bytes(), now).unwrap().unwrap();
        assert_eq!(event.payment_id, answer["payment_id"].as_str().unwrap());
        assert_eq!(
            event.kind,
            PaymentEventKind::Succeeded {
                session_id: "cs_sim_1".into(),
                amount: Decimal::from_str("12.50").unwrap(),
                currency: "EUR".into(),
            }
        );
    }

    /// POSTs an empty body to `url` with `content_type` (`None`: none), as a browser's form or an
    /// API caller would: the status and the `location` header.
    async fn post_as(url: &str, content_type: Option<&str>) -> (u16, Option<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let content_type = content_type.map_or_else(String::new, |t| format!("content-type: {t}\r\n"));
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\n{content_type}content-length: 0\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
        let location = answer
            .lines()
            .take_while(|line| !line.is_empty())
            .find_map(|line| line.strip_prefix("location: "))
            .map(str::to_owned);
        (status, location)
    }

    #[tokio::test]
    async fn a_payer_who_pays_on_the_page_is_sent_back_to_the_return_url() {
        const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
        let base = simulator(SimConfig::default()).await;
        let p = SimulatedProvider::new("simulated", base.as_str(), "sim-pay-key", SECRET);
        let back = "http://127.0.0.1:9/console/top-up/cs_back";
        let open = |session_id: &'static str, return_url: Option<&'static str>| {
            let p = &p;
            async move {
                let payment = OpenPayment {
                    session_id,
                    return_url,
                    ..payment("12.50", "http://127.0.0.1:9/hook")
                };
                p.open(&payment).await.unwrap().payment_url
            }
        };

        // The pay page's form: 303 to the return URL, again if pressed twice.
        let url = open("cs_back_form", Some(back)).await;
        assert_eq!(post_as(&url, FORM).await, (303, Some(back.to_owned())));
        assert_eq!(post_as(&url, FORM).await, (303, Some(back.to_owned())));
        assert_eq!(post_as(&url, None).await.0, 409);

        // An API caller gets the JSON answer even when the session has a return URL; a form
        // without one, too.
        let url = open("cs_back_api", Some(back)).await;
        assert_eq!(post_as(&format!("{url}?deliver=false"), None).await, (200, None));
        let url = open("cs_no_return", None).await;
        assert_eq!(post_as(&format!("{url}?deliver=false"), FORM).await, (200, None));
    }

    #[tokio::test]
    async fn open_refusals_and_unreachable() {
        let base = simulator(SimConfig {
            payments: PaymentSimConfig {
                api_key: "right".into(),
                webhook_secret: SECRET.into(),
            },
            ..SimConfig::default()
        })
        .await;
        let p = SimulatedProvider::new("simulated", base.as_str(), "wrong", SECRET);
        let err = p.open(&payment("1", "http://127.0.0.1:9/hook")).await.unwrap_err();
        assert!(
            matches!(&err, PaymentError::Refused { status: 401, message } if message.contains("API key")),
            "{err}"
        );
        let p = SimulatedProvider::new("simulated", base.as_str(), "right", SECRET);
        let err = p.open(&payment("1", "not a url")).await.unwrap_err();
        assert!(matches!(err, PaymentError::Refused { status: 400, .. }), "{err}");

        // Nothing listens on a port just released.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let p = SimulatedProvider::new("simulated", closed, "right", SECRET);
        let err = p.open(&payment("1", "http://127.0.0.1:9/hook")).await.unwrap_err();
        assert!(matches!(err, PaymentError::Unreachable(_)), "{err}");
    }
}
