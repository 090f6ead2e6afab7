//! The docs section: how to add Router One as a channel in one-api or new-api, and how to call
//! it from code, with this deployment's values (its public URL and its catalog's model ids).
//! The fuller guide is docs/relays.md in the repository; this page repeats its advice.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};

use crate::console::layout::{self, Section};
use crate::console::session::Session;
use crate::state::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/console/docs", get(page))
}

/// A read-only value with a copy button (`id` names the field and its status line).
fn copyable(id: &str, label: &str, value: &str, lines: Option<u32>) -> Markup {
    html! {
        label.copy-label for=(id) { (label) }
        div.secret {
            @match lines {
                Some(rows) => textarea id=(id) readonly rows=(rows) spellcheck="false" { (value) },
                None => input id=(id) type="text" readonly value=(value) spellcheck="false";,
            }
            button type="button" data-copy=(id) hidden { "Copy" }
            span id=(format!("{id}-status")) role="status" {}
        }
    }
}

/// `GET /console/docs`.
async fn page(State(app): State<Arc<AppState>>, session: Session) -> Response {
    let base = app.config.public_url.trim_end_matches('/');
    let api_base = format!("{base}/v1");
    let models: Vec<&str> = app.catalog.models().iter().map(|m| m.id.as_str()).collect();
    let model_list = models.join(",");
    let example = models
        .iter()
        .copied()
        .find(|id| {
            app.catalog
                .get(id)
                .is_some_and(|m| m.kind == router_one_core::ModelKind::Chat)
        })
        .unwrap_or("MODEL");
    let curl = format!(
        "curl {api_base}/chat/completions \\\n  -H \"Authorization: Bearer $ROUTER_ONE_KEY\" \\\n  -H \"Content-Type: application/json\" \\\n  -d '{{\"model\": \"{example}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'"
    );
    let python = format!(
        "from openai import OpenAI\n\nclient = OpenAI(base_url=\"{api_base}\", api_key=\"sk-rk-…\")\nreply = client.chat.completions.create(\n    model=\"{example}\", messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}]\n)\nprint(reply.choices[0].message.content, reply.usage.cost)  # cost: USD, exact"
    );
    let body = html! {
        p {
            "Router One speaks OpenAI's API. Point one channel of your one-api or new-api relay at it, "
            "or your own code, and every model below is served at its posted rate, with a usage record for every request."
        }
        h2 { "Add Router One as a channel in one-api or new-api" }
        ol.steps {
            li {
                a href="/console/keys/new" { "Create a key" } " for the channel. For a relay, tick "
                strong { "End every stream with its usage" } " (one-api never asks for it and would estimate tokens) and untick "
                strong { "Send Router One's headers" } " (relays pass headers on to their customers). "
                "Give it a spending cap and rate limits if you sell under caps: hitting them never makes a relay disable the channel."
            }
            li { "In the relay: Channels → Add channel, with these values:" }
        }
        div.card.channel {
            dl.facts.narrow-stack {
                dt { "Channel type" } dd { strong { "OpenAI" } " (or Custom)" }
                dt { "Model mapping" } dd { "None: Router One's model ids are the names it serves, and it never swaps one model for another." }
                dt { "Key" } dd { "The " code { "sk-rk-…" } " secret shown when you created the key." }
            }
            (copyable("base-url", "Base URL (without /v1: the relay adds /v1/chat/completions itself)", base, None))
            (copyable("model-list", "Models (or press \u{201c}fetch models\u{201d} in the relay: it lists exactly what the key may use)", &model_list, Some(4)))
        }
        p { "A Custom channel that asks for a full URL wants " code { (api_base) "/chat/completions" } "." }
        p {
            "The channel test passes (every answer has at least one completion token and exact usage), and the relay's balance probe reads what the key can still spend. "
            "Only a revoked or expired key (401) or money truly used up (402) makes a relay switch the channel off; "
            "rate limits and periodic budgets answer 429, which it retries elsewhere."
        }
        p.muted {
            "The full guide, with every refusal and what each relay makes of it, is "
            code { "docs/relays.md" } " in Router One's repository."
        }
        h2 { "Call it from your own code" }
        p { "Base URL " code #api-base { (api_base) } ", your key as the bearer token:" }
        pre tabindex="0" aria-label="curl example" { code { (curl) } }
        pre tabindex="0" aria-label="Python example" { code { (python) } }
        p {
            "Every response carries " code { "x-request-id" } ", the id of its usage record; " code { "usage.cost" }
            " is the exact cost in USD. See each model's rates on the " a href="/console/models" { "models page" } "."
        }
    };
    layout::ok(layout::page("Docs", Some(&session), Section::Docs, body))
}
