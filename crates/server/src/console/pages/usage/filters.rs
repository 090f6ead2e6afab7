//! The usage pages' query string: the API's filters as a visitor typed them (dates from a date
//! input), turned into the API's query and into console links that keep them.

use maud::{Markup, html};
use serde::Deserialize;
use time::macros::format_description;

use crate::console::api::query_value;
use crate::console::form::given;

/// Rows per page the form offers; the API's own default (100) is the first choice.
const PAGE_SIZES: [&str; 5] = ["100", "25", "50", "500", "1000"];

/// Statuses the form offers besides any: the two classes, then the codes a gateway answers.
const STATUSES: [(&str, &str); 16] = [
    ("success", "Succeeded (2xx)"),
    ("error", "Failed (not 2xx)"),
    ("200", "200 OK"),
    ("400", "400 Bad request"),
    ("401", "401 Unauthorized"),
    ("402", "402 Out of credit"),
    ("403", "403 Forbidden"),
    ("404", "404 Not found"),
    ("408", "408 Timeout"),
    ("413", "413 Too large"),
    ("429", "429 Rate limited"),
    ("499", "499 Client left"),
    ("500", "500 Server error"),
    ("502", "502 Upstream error"),
    ("503", "503 Unavailable"),
    ("504", "504 Upstream timeout"),
];

/// The usage pages' query: every field as typed (the API validates them and says what is wrong).
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Filters {
    pub(crate) key_id: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) status: Option<String>,
    /// `YYYY-MM-DD` (UTC), the first day shown; or what the API takes (RFC 3339, Unix seconds).
    pub(crate) from: Option<String>,
    /// `YYYY-MM-DD` (UTC), the last day shown, inclusive.
    pub(crate) to: Option<String>,
    pub(crate) after: Option<String>,
    pub(crate) limit: Option<String>,
    /// Summaries: `key`, `model` or `day`.
    pub(crate) group_by: Option<String>,
    /// Downloads: `csv` or `jsonl`.
    pub(crate) format: Option<String>,
}

/// `YYYY-MM-DD` as the RFC 3339 midnight (UTC) `days_later` days after it; `None` if `text` is
/// no such date (then it goes to the API as it is, which says what it takes).
fn midnight(text: &str, days_later: i64) -> Option<String> {
    let date = time::Date::parse(text, format_description!("[year]-[month]-[day]")).ok()?;
    let date = date.checked_add(time::Duration::days(days_later))?;
    Some(format!("{date}T00:00:00Z"))
}

/// `name=value` pairs joined as a query string.
fn joined(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", query_value(value)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Filters {
    /// The filters the API applies (key, model, status, time), as `(name, value)` pairs.
    fn api_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        for (name, value) in [
            ("key_id", &self.key_id),
            ("model", &self.model),
            ("status", &self.status),
        ] {
            if let Some(value) = given(value) {
                pairs.push((name, value.to_owned()));
            }
        }
        if let Some(from) = given(&self.from) {
            pairs.push(("from", midnight(from, 0).unwrap_or_else(|| from.to_owned())));
        }
        // The API's `to` is exclusive; the form's last day is included.
        if let Some(to) = given(&self.to) {
            pairs.push(("to", midnight(to, 1).unwrap_or_else(|| to.to_owned())));
        }
        pairs
    }

    /// The query of `GET /v1/usage` for this page (`format`: `None` for JSON).
    /// The table shows the newest first.
    pub(crate) fn usage_query(&self) -> String {
        let mut pairs = self.api_pairs();
        pairs.extend(self.page_pairs());
        pairs.push(("order", "desc".to_owned()));
        joined(&pairs)
    }

    /// The query of one page of a download: every record the filters match, oldest first (the
    /// order of a ledger), the API's largest pages, from `after`.
    pub(crate) fn download_query(&self, format: &str, after: Option<&str>) -> String {
        let mut pairs = self.api_pairs();
        pairs.push(("limit", "1000".to_owned()));
        if let Some(after) = after {
            pairs.push(("after", after.to_owned()));
        }
        pairs.push(("format", format.to_owned()));
        joined(&pairs)
    }

    /// The query of `GET /v1/usage/summary` grouped by `group`.
    pub(crate) fn summary_query(&self, group: &str) -> String {
        let mut pairs = vec![("group_by", group.to_owned())];
        pairs.extend(self.api_pairs());
        joined(&pairs)
    }

    /// `after` and `limit`, as given.
    fn page_pairs(&self) -> Vec<(&'static str, String)> {
        [("after", &self.after), ("limit", &self.limit)]
            .into_iter()
            .filter_map(|(name, value)| given(value).map(|v| (name, v.to_owned())))
            .collect()
    }

    /// The filters as typed, for console links (dates stay dates).
    fn typed_pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("key_id", &self.key_id),
            ("model", &self.model),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(name, value)| given(value).map(|v| (name, v.to_owned())))
        .collect()
    }

    /// `path` with these filters (not the page), and `extra` pairs.
    pub(crate) fn link(&self, path: &str, extra: &[(&'static str, String)]) -> String {
        let mut pairs = self.typed_pairs();
        pairs.extend(extra.iter().cloned());
        if pairs.is_empty() {
            return path.to_owned();
        }
        format!("{path}?{}", joined(&pairs))
    }

    /// The usage table's page size as given (kept in page links).
    pub(crate) fn limit_pair(&self) -> Vec<(&'static str, String)> {
        given(&self.limit)
            .map(|l| vec![("limit", l.to_owned())])
            .unwrap_or_default()
    }

    /// A download of every record the filters match (not only this page's).
    pub(crate) fn download_link(&self, format: &str) -> String {
        self.link("/console/usage/download", &[("format", format.to_owned())])
    }
}

/// A key a visitor can filter by: its id and how the page names it.
pub(crate) struct KeyChoice {
    pub(crate) id: String,
    pub(crate) label: String,
}

/// What the filter form offers.
pub(crate) struct Choices<'a> {
    pub(crate) keys: &'a [KeyChoice],
    pub(crate) models: &'a [String],
    /// The page the form sends to, and whether it has a page size (the request table does).
    pub(crate) action: &'a str,
    pub(crate) paged: bool,
}

fn option(value: &str, label: &str, current: Option<&str>) -> Markup {
    html! { option value=(value) selected[current == Some(value)] { (label) } }
}

/// A select's options: "any", `choices`, and the current value if it is none of them (a
/// shared link's).
fn options<'a>(any: &str, choices: impl Iterator<Item = (&'a str, &'a str)>, current: Option<&str>) -> Markup {
    let choices: Vec<(&str, &str)> = choices.collect();
    let known = choices.iter().any(|(value, _)| current == Some(*value));
    html! {
        option value="" { (any) }
        @for (value, label) in choices { (option(value, label, current)) }
        @if let (Some(value), false) = (current, known) { (option(value, value, current)) }
    }
}

/// The filter form: a GET, so the page's address is the filtered view to share.
pub(crate) fn form(filters: &Filters, choices: &Choices<'_>) -> Markup {
    let keys = choices.keys.iter().map(|k| (k.id.as_str(), k.label.as_str()));
    let models = choices.models.iter().map(|m| (m.as_str(), m.as_str()));
    let limit = given(&filters.limit).unwrap_or("100");
    html! {
        form.inline.card.filters method="get" action=(choices.action) aria-label="Filter usage" {
            @if let Some(group) = given(&filters.group_by) { input type="hidden" name="group_by" value=(group); }
            label { "Key" select name="key_id" { (options("Any key", keys, given(&filters.key_id))) } }
            label { "Model" select name="model" { (options("Any model", models, given(&filters.model))) } }
            label { "Status" select name="status" { (options("Any status", STATUSES.into_iter(), given(&filters.status))) } }
            label { "From (UTC)" input type="date" name="from" value=[given(&filters.from)]; }
            label { "To, inclusive (UTC)" input type="date" name="to" value=[given(&filters.to)]; }
            @if choices.paged {
                label {
                    "Rows per page"
                    select name="limit" {
                        @for size in PAGE_SIZES { (option(size, size, Some(limit))) }
                        @if !PAGE_SIZES.contains(&limit) { (option(limit, limit, Some(limit))) }
                    }
                }
            }
            button type="submit" { "Apply" }
            a.button.secondary href=(choices.action) { "Clear" }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn filters(from: &str, to: &str) -> Filters {
        Filters {
            model: Some("gpt 4o".into()),
            status: Some(String::new()),
            from: Some(from.into()),
            to: Some(to.into()),
            after: Some("req_1".into()),
            limit: Some("25".into()),
            ..Filters::default()
        }
    }

    #[test]
    fn a_date_range_includes_its_last_day() {
        let q = filters("2026-02-28", "2026-02-28").usage_query();
        assert_eq!(
            q,
            "model=gpt%204o&from=2026-02-28T00%3A00%3A00Z&to=2026-03-01T00%3A00%3A00Z&after=req_1&limit=25&order=desc"
        );
        // A download starts at the first record whatever page the table is on.
        let q = filters("2026-02-28", "2026-02-28").download_query("csv", None);
        assert_eq!(
            q,
            "model=gpt%204o&from=2026-02-28T00%3A00%3A00Z&to=2026-03-01T00%3A00%3A00Z&limit=1000&format=csv"
        );
    }

    #[test]
    fn what_is_no_date_goes_to_the_api_as_typed() {
        let q = filters("1700000000", "soon").summary_query("day");
        assert_eq!(q, "group_by=day&model=gpt%204o&from=1700000000&to=soon");
    }

    #[test]
    fn links_keep_the_filters_as_typed_but_not_the_page() {
        let f = filters("2026-01-01", "2026-01-31");
        assert_eq!(
            f.link("/console/usage/summary", &[("group_by", "key".into())]),
            "/console/usage/summary?model=gpt%204o&from=2026-01-01&to=2026-01-31&group_by=key"
        );
        assert_eq!(
            f.download_link("csv"),
            // Not the page: a download holds every record the filters match.
            "/console/usage/download?model=gpt%204o&from=2026-01-01&to=2026-01-31&format=csv"
        );
        assert_eq!(Filters::default().link("/console/usage", &[]), "/console/usage");
    }
}
