//! `GET /console/usage/summary?group_by=key|model|day&…`: the totals of `GET /v1/usage/summary`
//! under the usage filters, as a table and a chart of cost per group.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use maud::{Markup, html};
use rust_decimal::Decimal;
use serde_json::Value;

use super::filters::{self, Choices, Filters, KeyChoice};
use super::{View, count, filters_of, key_choices, key_name, rows, text, used_models, views};
use crate::console::api::Api;
use crate::console::chart::{self, Series};
use crate::console::form::given;
use crate::console::layout::{self, Section};
use crate::console::session::Session;

/// The groupings, as the API names them and as the page's column says.
const GROUPS: [(&str, &str); 3] = [("key", "Key"), ("model", "Model"), ("day", "Day (UTC)")];

/// The token columns of a summary row, summed in the total row too.
const TOKENS: [(&str, &str); 4] = [
    ("prompt_tokens", "Prompt"),
    ("cached_tokens", "Cached"),
    ("completion_tokens", "Completion"),
    ("reasoning_tokens", "Reasoning"),
];

fn cost(row: &Value) -> Decimal {
    text(row, "cost").parse().unwrap_or_default()
}

fn total(rows: &[Value], field: &str) -> u64 {
    rows.iter().filter_map(|r| r.get(field).and_then(Value::as_u64)).sum()
}

pub(super) async fn page(
    session: Session,
    Extension(api): Extension<Api>,
    query: Result<Query<Filters>, QueryRejection>,
) -> Response {
    let filters = filters_of(query);
    // The API says which groupings there are; an unknown one comes back as its 400.
    let group = given(&filters.group_by).unwrap_or("model").to_owned();
    let (keys, models) = match tokio::try_join!(key_choices(&api, &session), used_models(&api, &session)) {
        Ok(found) => found,
        Err(failure) => return layout::failed(failure),
    };
    let choices = Choices {
        keys: &keys,
        models: &models,
        action: "/console/usage/summary",
        paged: false,
    };
    let summed = api
        .get(
            &session,
            &format!("/v1/usage/summary?{}", filters.summary_query(&group)),
        )
        .await;
    let (status, results) = match summed {
        Ok(answer) => (StatusCode::OK, totals(&group, &rows(&answer), &keys)),
        Err(failure) if failure.status.is_client_error() && failure.status != StatusCode::UNAUTHORIZED => {
            (failure.status, layout::error_box(&failure.message))
        }
        Err(failure) => return layout::failed(failure),
    };
    let body = html! {
        (views(View::By(&group), &filters))
        h2 { "Filter" }
        (filters::form(&filters, &choices))
        (results)
    };
    let page = layout::page("Usage", Some(&session), Section::Usage, body);
    (status, layout::ok(page)).into_response()
}

/// The summary table (with a total row) and the chart of cost per group.
fn totals(group: &str, rows: &[Value], keys: &[KeyChoice]) -> Markup {
    let heading = GROUPS
        .iter()
        .find(|(name, _)| *name == group)
        .map_or("Group", |(_, h)| h);
    let label = |row: &Value| -> String {
        let name = text(row, "group");
        if group == "key" {
            key_name(keys, name).to_owned()
        } else {
            name.to_owned()
        }
    };
    let labels: Vec<String> = rows.iter().map(label).collect();
    let costs = Series {
        name: "Cost".into(),
        values: rows.iter().map(cost).collect(),
    };
    let total_cost: Decimal = costs.values.iter().copied().sum();
    let title = format!("Cost by {}", heading.to_lowercase());
    html! {
        h2 #totals { "Totals by " (heading.to_lowercase()) }
        @if rows.is_empty() {
            p.card { "No requests match these filters." }
        } @else {
            div.table-wrap tabindex="0" {
                table.summary {
                    caption { "Totals of the requests matching the filters; costs in USD exactly as billed." }
                    thead {
                        tr {
                            th scope="col" { (heading) }
                            th.num scope="col" { "Requests" }
                            @for (_, name) in TOKENS { th.num scope="col" { (name) " tokens" } }
                            th.num scope="col" { "Cost" }
                        }
                    }
                    tbody {
                        @for (row, name) in rows.iter().zip(&labels) {
                            tr {
                                th scope="row" { (name) }
                                td.num { (count(row, "requests")) }
                                @for (field, _) in TOKENS { td.num { (count(row, field)) } }
                                td.num.cost { (layout::usd(text(row, "cost"))) }
                            }
                        }
                    }
                    tfoot {
                        tr {
                            th scope="row" { "Total" }
                            td.num #total-requests { (total(rows, "requests")) }
                            @for (field, _) in TOKENS { td.num { (total(rows, field)) } }
                            td.num.cost #total-cost { (layout::usd(&total_cost.to_string())) }
                        }
                    }
                }
            }
            (chart::stacked_bars(&title, heading, &labels, &[costs], |d| layout::usd(&d.to_string())))
        }
    }
}
