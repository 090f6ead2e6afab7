//! `GET /console`: balance, spend today and this month, the last 24 hours' requests and errors,
//! and the last 30 days' cost by model.

use axum::Extension;
use axum::response::Response;
use maud::html;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::console::api::{Api, Failure, query_value, text};
use crate::console::chart::{self, Series};
use crate::console::layout::{self, Section};
use crate::console::session::Session;

/// Models drawn on their own in the chart; the rest are summed as "other".
const CHART_MODELS: usize = 6;
const DAY_SECS: i64 = 86_400;
const CHART_DAYS: i64 = 30;

/// The `data` rows of a usage summary.
async fn summary(api: &Api, session: &Session, query: &str) -> Result<Vec<Value>, Failure> {
    let answer = api.get(session, &format!("/v1/usage/summary?{query}")).await?;
    Ok(answer
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

fn cost(row: &Value) -> Decimal {
    text(row, "cost").parse().unwrap_or_default()
}

fn requests(rows: &[Value]) -> u64 {
    rows.iter()
        .filter_map(|r| r.get("requests").and_then(Value::as_u64))
        .sum()
}

/// `YYYY-MM-DD` of a Unix time (UTC), as the usage summary groups days.
fn day_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

pub(crate) async fn page(session: Session, Extension(api): Extension<Api>) -> Response {
    match render(&session, &api).await {
        Ok(page) => layout::ok(page),
        Err(failure) => layout::failed(failure),
    }
}

async fn render(session: &Session, api: &Api) -> Result<maud::Markup, Failure> {
    let account = api.get(session, "/v1/account").await?;
    let now = router_one_core::ids::now_us() / 1_000_000;
    let today = day_of(now);
    let first_day = now - (CHART_DAYS - 1) * DAY_SECS;
    let from = first_day - first_day.rem_euclid(DAY_SECS);
    let month_start = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| t.replace_day(1).ok())
        .map_or(now, |t| t.date().midnight().assume_utc().unix_timestamp());

    let by_day = summary(api, session, &format!("group_by=day&from={}", from.min(month_start))).await?;
    let spend_today: Decimal = by_day.iter().filter(|r| text(r, "group") == today).map(cost).sum();
    let month = day_of(month_start);
    let spend_month: Decimal = by_day
        .iter()
        .filter(|r| text(r, "group") >= month.as_str())
        .map(cost)
        .sum();
    let since = now - DAY_SECS;
    let last_day = requests(&summary(api, session, &format!("group_by=model&from={since}")).await?);
    let last_day_errors = requests(&summary(api, session, &format!("group_by=model&status=error&from={since}")).await?);

    // The chart: the most costly models of the 30 days, one series each, the rest as "other".
    let days: Vec<String> = (0..CHART_DAYS).map(|d| day_of(from + d * DAY_SECS)).collect();
    let mut by_model = summary(api, session, &format!("group_by=model&from={from}")).await?;
    by_model.sort_by_key(|r| std::cmp::Reverse(cost(r)));
    let per_day = |rows: &[Value]| -> Vec<Decimal> {
        days.iter()
            .map(|d| rows.iter().filter(|r| text(r, "group") == d).map(cost).sum())
            .collect()
    };
    let mut series = Vec::new();
    for row in by_model.iter().take(CHART_MODELS) {
        let model = text(row, "group");
        let rows = summary(
            api,
            session,
            &format!("group_by=day&from={from}&model={}", query_value(model)),
        )
        .await?;
        series.push(Series {
            name: model.to_owned(),
            values: per_day(&rows),
        });
    }
    if by_model.len() > CHART_MODELS {
        let all = per_day(&by_day);
        let other = all
            .iter()
            .enumerate()
            .map(|(i, total)| total - series.iter().filter_map(|s| s.values.get(i)).copied().sum::<Decimal>())
            .collect();
        series.push(Series {
            name: "other models".into(),
            values: other,
        });
    }
    let labels: Vec<String> = days.iter().map(|d| d.get(5..).unwrap_or(d).to_owned()).collect();

    let balance = text(&account, "balance");
    let body = html! {
        div.cards {
            div.card { span.label { "Balance" } span.figure #balance { (layout::usd(balance)) } a href="/console/top-up" { "Top up" } }
            div.card { span.label { "Spent today (UTC)" } span.figure #spend-today { (layout::usd(&spend_today.to_string())) } }
            div.card { span.label { "Spent this month" } span.figure #spend-month { (layout::usd(&spend_month.to_string())) } }
            div.card { span.label { "Requests, last 24 h" } span.figure #requests-24h { (last_day) } }
            div.card { span.label { "Errors, last 24 h" } span.figure #errors-24h { (last_day_errors) } }
        }
        @if series.is_empty() {
            p.card { "No requests in the last 30 days yet. " a href="/console/keys/new" { "Create a key" } " and send one." }
        } @else {
            (chart::stacked_bars("Daily cost by model, last 30 days (UTC)", "Day", &labels, &series, |d| layout::usd(&d.to_string())))
        }
    };
    Ok(layout::page("Overview", Some(session), Section::Overview, body))
}
