//! The key form, shared by "new key" and a key's edit form: its fields as posted, the JSON body
//! they make for `POST /v1/keys` or `PATCH /v1/keys/{id}`, and its markup. The console checks
//! nothing itself: a value it cannot read as a number or as JSON goes to the API as the text the
//! visitor typed, so every refusal is the API's, naming its field.

use std::fmt;

use maud::{Markup, html};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::console::api::Failure;
use crate::console::form::filled;

/// The key form as posted; every field is text, checkboxes are present when ticked.
#[derive(Deserialize, Default)]
pub(crate) struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    max_spend: String,
    #[serde(default)]
    budget_period: String,
    #[serde(default)]
    rpm_limit: String,
    #[serde(default)]
    tpm_limit: String,
    #[serde(default)]
    max_concurrency: String,
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    on_oversized_max_tokens: String,
    always_include_usage: Option<String>,
    router_headers: Option<String>,
    /// The ticked `models` checkboxes (one form field per model, all named `models`).
    #[serde(flatten)]
    models: Picked,
}

/// Every value posted under the name `models`: a form's repeated field, which a plain struct
/// field (one value) cannot hold.
#[derive(Default)]
struct Picked(Vec<String>);

impl<'de> Deserialize<'de> for Picked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Picked, D::Error> {
        struct PickedVisitor;
        impl<'de> Visitor<'de> for PickedVisitor {
            type Value = Picked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("form fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked, A::Error> {
                let mut picked = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if name == "models" {
                        picked.push(value);
                    }
                }
                Ok(Picked(picked))
            }
        }
        deserializer.deserialize_map(PickedVisitor)
    }
}

/// A count (`rpm_limit`, …): a JSON number when it reads as one, else the text as typed.
fn count(text: &str) -> Value {
    match filled(text) {
        None => Value::Null,
        Some(t) => t.parse::<u64>().map_or_else(|_| Value::from(t), Value::from),
    }
}

/// Optional text: `null` when left empty (which clears a field on `PATCH`).
fn optional(text: &str) -> Value {
    filled(text).map_or(Value::Null, Value::from)
}

/// `expires_at` as RFC 3339: a browser's `datetime-local` value (`2030-01-01T00:00`, read as
/// UTC) gets its seconds and `Z`; anything else goes to the API as typed.
fn expiry(text: &str) -> Value {
    let Some(t) = filled(text) else {
        return Value::Null;
    };
    let zoned = t.ends_with(['Z', 'z']) || t.get(10..).is_some_and(|time| time.contains(['+', '-']));
    let time_colons = t.get(10..).map_or(0, |time| time.matches(':').count());
    let full = match (zoned, time_colons) {
        (false, 1) => format!("{t}:00Z"),
        (false, 2) => format!("{t}Z"),
        _ => t.to_owned(),
    };
    Value::from(full)
}

/// `metadata` as a JSON value when it parses, else as the text typed (the API says why not).
fn metadata(text: &str) -> Value {
    match filled(text) {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::from(t)),
    }
}

impl KeyForm {
    /// The settings as a JSON body; an empty field is `null` (absent on create, cleared on edit).
    pub(crate) fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("name".into(), optional(&self.name));
        body.insert("max_spend".into(), optional(&self.max_spend));
        body.insert("budget_period".into(), optional(&self.budget_period));
        body.insert("rpm_limit".into(), count(&self.rpm_limit));
        body.insert("tpm_limit".into(), count(&self.tpm_limit));
        body.insert("max_concurrency".into(), count(&self.max_concurrency));
        let models = if self.models.0.is_empty() {
            Value::Null
        } else {
            Value::from(self.models.0.clone())
        };
        body.insert("models".into(), models);
        body.insert("expires_at".into(), expiry(&self.expires_at));
        body.insert("metadata".into(), metadata(&self.metadata));
        body.insert(
            "on_oversized_max_tokens".into(),
            optional(&self.on_oversized_max_tokens),
        );
        body.insert(
            "always_include_usage".into(),
            Value::from(self.always_include_usage.is_some()),
        );
        body.insert("router_headers".into(), Value::from(self.router_headers.is_some()));
        Value::Object(body)
    }

    /// A new key's form: the API's defaults.
    pub(crate) fn defaults() -> KeyForm {
        KeyForm {
            budget_period: "none".into(),
            on_oversized_max_tokens: "clamp".into(),
            router_headers: Some("on".into()),
            ..KeyForm::default()
        }
    }

    /// The form filled with a key's settings as `GET /v1/keys/{id}` shows them.
    pub(crate) fn of_key(key: &Value) -> KeyForm {
        let text = |field: &str| key.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        let number = |field: &str| {
            key.get(field)
                .and_then(Value::as_u64)
                .map(|n| n.to_string())
                .unwrap_or_default()
        };
        let flag = |field: &str| {
            key.get(field)
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .then(|| "on".to_owned())
        };
        let metadata = match key.get("metadata") {
            Some(Value::Object(map)) if !map.is_empty() => serde_json::to_string_pretty(map).unwrap_or_default(),
            _ => String::new(),
        };
        let models = key
            .get("models")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        KeyForm {
            name: text("name"),
            max_spend: text("max_spend"),
            budget_period: text("budget_period"),
            rpm_limit: number("rpm_limit"),
            tpm_limit: number("tpm_limit"),
            max_concurrency: number("max_concurrency"),
            expires_at: local_time(&text("expires_at")),
            metadata,
            on_oversized_max_tokens: text("on_oversized_max_tokens"),
            always_include_usage: flag("always_include_usage"),
            router_headers: flag("router_headers"),
            models: Picked(models),
        }
    }
}

/// An RFC 3339 UTC time (`2030-01-01T00:00:00Z`) as a `datetime-local` value.
fn local_time(rfc3339: &str) -> String {
    let plain = rfc3339.trim_end_matches('Z');
    plain.split('.').next().unwrap_or(plain).to_owned()
}

/// What the form needs besides its values.
pub(crate) struct FormFrame<'a> {
    pub(crate) action: &'a str,
    pub(crate) token: &'a str,
    pub(crate) submit: &'a str,
    /// Every catalog model id, for the allow-list.
    pub(crate) model_ids: &'a [String],
    /// The API's refusal of the last post, if any.
    pub(crate) error: Option<&'a Failure>,
}

impl FormFrame<'_> {
    /// The API's message when it names `field`.
    fn error_of(&self, field: &str) -> Option<&str> {
        self.error
            .filter(|e| e.param.as_deref() == Some(field))
            .map(|e| e.message.as_str())
    }

    fn invalid(&self, field: &str) -> Option<&'static str> {
        self.error_of(field).map(|_| "true")
    }

    /// The `aria-describedby` of `field`: its hint, and its error when it has one.
    fn described_by(&self, field: &str) -> String {
        match self.error_of(field) {
            Some(_) => format!("{field}-hint {field}-error"),
            None => format!("{field}-hint"),
        }
    }

    /// The hint under a field's label, and the API's message when it names the field.
    fn hint(&self, field: &str, hint: &str) -> Markup {
        html! {
            span.hint id=(format!("{field}-hint")) { (hint) }
            @if let Some(message) = self.error_of(field) {
                span.field-error id=(format!("{field}-error")) { (message) }
            }
        }
    }
}

fn options(current: &str, choices: &[(&str, &str)]) -> Markup {
    html! {
        @for (value, label) in choices {
            option value=(value) selected[*value == current] { (label) }
        }
    }
}

/// The form: every setting `POST /v1/keys` accepts, filled with `values`.
pub(crate) fn render(frame: &FormFrame<'_>, values: &KeyForm) -> Markup {
    let f = frame;
    html! {
        form.stack.card method="post" action=(f.action) {
            (crate::console::layout::token_field(f.token))
            label {
                "Name"
                (f.hint("name", "Yours to recognise the key by, e.g. the customer or relay it is for."))
                input type="text" name="name" value=(values.name) maxlength="200" autocomplete="off"
                    aria-describedby=(f.described_by("name")) aria-invalid=[f.invalid("name")];
            }
            fieldset {
                legend { "Budget" }
                label {
                    "Spending cap (USD)"
                    (f.hint("max_spend", "A decimal amount, e.g. 25.00. Empty: no cap (the account's balance still applies)."))
                    input type="text" inputmode="decimal" name="max_spend" value=(values.max_spend) autocomplete="off"
                        aria-describedby=(f.described_by("max_spend")) aria-invalid=[f.invalid("max_spend")];
                }
                label {
                    "Budget period"
                    (f.hint("budget_period", "When the cap starts again (UTC). None: the cap is for the key's whole life."))
                    select name="budget_period" aria-describedby=(f.described_by("budget_period"))
                        aria-invalid=[f.invalid("budget_period")] {
                        (options(&values.budget_period, &[("none", "None (lifetime)"), ("daily", "Daily"), ("weekly", "Weekly"), ("monthly", "Monthly")]))
                    }
                }
            }
            fieldset {
                legend { "Rate limits" }
                label {
                    "Requests per minute"
                    (f.hint("rpm_limit", "Empty: no limit."))
                    input type="number" min="1" step="1" name="rpm_limit" value=(values.rpm_limit)
                        aria-describedby=(f.described_by("rpm_limit")) aria-invalid=[f.invalid("rpm_limit")];
                }
                label {
                    "Tokens per minute"
                    (f.hint("tpm_limit", "Input and output tokens together. Empty: no limit."))
                    input type="number" min="1" step="1" name="tpm_limit" value=(values.tpm_limit)
                        aria-describedby=(f.described_by("tpm_limit")) aria-invalid=[f.invalid("tpm_limit")];
                }
                label {
                    "Requests at once"
                    (f.hint("max_concurrency", "Most requests in flight at the same time. Empty: no limit."))
                    input type="number" min="1" step="1" name="max_concurrency" value=(values.max_concurrency)
                        aria-describedby=(f.described_by("max_concurrency")) aria-invalid=[f.invalid("max_concurrency")];
                }
            }
            fieldset aria-describedby=(f.described_by("models")) {
                legend { "Allowed models" }
                (f.hint("models", "None ticked: every model, including ones added later."))
                div.model-picks {
                    @for id in f.model_ids {
                        label.check {
                            input type="checkbox" name="models" value=(id) checked[values.models.0.contains(id)];
                            span { (id) }
                        }
                    }
                }
            }
            label {
                "Expires (UTC)"
                (f.hint("expires_at", "After this moment the key is refused. Empty: never."))
                input type="datetime-local" step="1" name="expires_at" value=(values.expires_at)
                    aria-describedby=(f.described_by("expires_at")) aria-invalid=[f.invalid("expires_at")];
            }
            label {
                "Metadata"
                (f.hint("metadata", "A JSON object kept with the key, e.g. {\"customer\": \"acme\"}; at most 8 KiB. Empty: none."))
                textarea name="metadata" rows="3" spellcheck="false"
                    aria-describedby=(f.described_by("metadata")) aria-invalid=[f.invalid("metadata")] { (values.metadata) }
            }
            fieldset {
                legend { "For relays (one-api, new-api)" }
                label {
                    "A max_tokens the key cannot pay for"
                    (f.hint("on_oversized_max_tokens", "Clamp: serve the largest limit the key can pay for. Refuse: answer 400."))
                    select name="on_oversized_max_tokens" aria-describedby=(f.described_by("on_oversized_max_tokens"))
                        aria-invalid=[f.invalid("on_oversized_max_tokens")] {
                        (options(&values.on_oversized_max_tokens, &[("clamp", "Clamp"), ("refuse", "Refuse")]))
                    }
                }
                label.check {
                    input type="checkbox" name="always_include_usage" checked[values.always_include_usage.is_some()]
                        aria-describedby="always_include_usage-hint";
                    span { "End every stream with its usage" }
                }
                span.hint #always_include_usage-hint {
                    "On for one-api: it never asks for usage and would estimate tokens itself."
                }
                label.check {
                    input type="checkbox" name="router_headers" checked[values.router_headers.is_some()]
                        aria-describedby="router_headers-hint";
                    span { "Send Router One's headers" }
                }
                span.hint #router_headers-hint {
                    "The served model, provider and receipt headers. Off for a relay that passes headers on to its customers."
                }
            }
            button type="submit" { (f.submit) }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_time_becomes_utc_rfc3339() {
        assert_eq!(expiry("2030-01-02T03:04"), Value::from("2030-01-02T03:04:00Z"));
        assert_eq!(expiry("2030-01-02T03:04:05"), Value::from("2030-01-02T03:04:05Z"));
        assert_eq!(
            expiry("2030-01-02T03:04:05+02:00"),
            Value::from("2030-01-02T03:04:05+02:00")
        );
        assert_eq!(expiry(" "), Value::Null);
        assert_eq!(local_time("2030-01-02T03:04:05.5Z"), "2030-01-02T03:04:05");
    }

    #[test]
    fn what_is_not_a_number_or_json_goes_to_the_api_as_typed() {
        assert_eq!(count("60"), Value::from(60));
        assert_eq!(count("-5"), Value::from("-5"));
        assert_eq!(count(""), Value::Null);
        assert_eq!(metadata("{\"a\": 1}"), serde_json::json!({"a": 1}));
        assert_eq!(metadata("{oops"), Value::from("{oops"));
    }

    #[tokio::test]
    async fn repeated_model_fields_are_all_kept() {
        use axum::extract::FromRequest;
        let request = http::Request::post("/")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(axum::body::Body::from("name=x&models=a&models=b&router_headers=on"))
            .unwrap();
        let axum::Form(form) = axum::Form::<KeyForm>::from_request(request, &()).await.unwrap();
        let body = form.body();
        assert_eq!(body["models"], serde_json::json!(["a", "b"]));
        assert_eq!(body["router_headers"], Value::from(true));
        assert_eq!(body["always_include_usage"], Value::from(false));
        assert_eq!(body["max_spend"], Value::Null);
    }
}
