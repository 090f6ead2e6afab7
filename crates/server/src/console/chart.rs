//! Bar charts drawn on the server as SVG: no chart library, no script. Amounts stay decimals;
//! only bar heights (whole pixels) are computed from them. Each chart comes with its figures as
//! a table for screen readers and for anyone who wants the numbers.

use maud::{Markup, html};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Colour classes (`.s0`…`.s6` in console.css); the seventh is "other".
const COLOURS: usize = 7;
const WIDTH: u32 = 720;
const HEIGHT: u32 = 220;
const AXIS: u32 = 20;

/// One stacked series: a name and one amount per column.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) values: Vec<Decimal>,
}

/// A stacked bar chart of `series` over `columns` (their labels, what `axis` names: "Day",
/// "Model"), titled `title`; `unit` formats an amount for the table and the tooltips.
pub(crate) fn stacked_bars(
    title: &str,
    axis: &str,
    columns: &[String],
    series: &[Series],
    unit: fn(Decimal) -> String,
) -> Markup {
    let totals: Vec<Decimal> = (0..columns.len())
        .map(|i| series.iter().filter_map(|s| s.values.get(i)).copied().sum())
        .collect();
    let top = totals.iter().copied().max().unwrap_or_default();
    let count = u32::try_from(columns.len()).unwrap_or(1).max(1);
    let slot = WIDTH / count;
    let bar = (slot * 7 / 10).max(1);
    let plot = HEIGHT - AXIS;
    let height_of = |amount: Decimal| -> u32 {
        if top.is_zero() {
            return 0;
        }
        (amount * Decimal::from(plot) / top).round().to_u32().unwrap_or(0)
    };
    html! {
        figure.chart.card {
            figcaption { strong { (title) } }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(format!("{title} (the table below has the figures)")) {
                line x1="0" y1=(plot) x2=(WIDTH) y2=(plot) stroke="#9ca3af" {}
                @for (i, column) in columns.iter().enumerate() {
                    @let x = u32::try_from(i).unwrap_or(0) * slot + (slot - bar) / 2;
                    @for (s, one, amount, y, h) in stacked(series, i, plot, &height_of) {
                        rect class=(format!("s{}", s.min(COLOURS - 1))) x=(x) y=(y) width=(bar) height=(h) {
                            title { (column) ", " (one.name) ": " (unit(amount)) }
                        }
                    }
                    @if i == 0 || i + 1 == columns.len() || columns.len() <= 10 {
                        // The first and last labels keep inside the drawing.
                        @let (anchor, at) = match i {
                            0 if columns.len() > 1 => ("start", x),
                            last if last + 1 == columns.len() && last > 0 => ("end", x + bar),
                            _ => ("middle", x + bar / 2),
                        };
                        text x=(at) y=(HEIGHT - 4) text-anchor=(anchor) font-size="11" fill="#4b5563" { (column) }
                    }
                }
            }
            ul.legend {
                @for (s, one) in series.iter().enumerate() {
                    li { span class=(format!("swatch s{}", s.min(COLOURS - 1))) {} (one.name) }
                }
            }
            details {
                summary { "The figures" }
                div.table-wrap tabindex="0" {
                    table {
                        caption { (title) }
                        thead { tr { th scope="col" { (axis) } @for one in series { th.num scope="col" { (one.name) } } th.num scope="col" { "Total" } } }
                        tbody {
                            @for (i, column) in columns.iter().enumerate() {
                                tr {
                                    th scope="row" { (column) }
                                    @for one in series { td.num { (unit(one.values.get(i).copied().unwrap_or_default())) } }
                                    td.num { (unit(totals.get(i).copied().unwrap_or_default())) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Column `i`'s bars, bottom up: series index, series, amount, top edge and height (pixels);
/// empty bars left out.
fn stacked<'a>(
    series: &'a [Series],
    i: usize,
    plot: u32,
    height_of: &dyn Fn(Decimal) -> u32,
) -> Vec<(usize, &'a Series, Decimal, u32, u32)> {
    let mut base = plot;
    let mut bars = Vec::new();
    for (s, one) in series.iter().enumerate() {
        let amount = one.values.get(i).copied().unwrap_or_default();
        let h = height_of(amount);
        if h > 0 {
            base = base.saturating_sub(h);
            bars.push((s, one, amount, base, h));
        }
    }
    bars
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_tallest_column_fills_the_plot_and_others_scale_exactly() {
        let columns = vec!["d1".to_owned(), "d2".to_owned()];
        let series = [
            Series {
                name: "a".into(),
                values: vec![Decimal::new(1, 0), Decimal::new(3, 0)],
            },
            Series {
                name: "b".into(),
                values: vec![Decimal::new(1, 0), Decimal::new(1, 0)],
            },
        ];
        let svg = stacked_bars("Cost", "Day", &columns, &series, |d| format!("${d}")).into_string();
        // d2 totals 4 (the top): a's 3 is 150 px of the 200 px plot, b's 1 is 50 px on top of it.
        assert!(svg.contains(r#"y="50" width="252" height="150""#), "{svg}");
        assert!(svg.contains(r#"y="0" width="252" height="50""#), "{svg}");
        // d1 totals 2: two bars of 50 px.
        assert!(svg.contains(r#"y="150" width="252" height="50""#), "{svg}");
        assert!(svg.contains("<title>d2, a: $3</title>"), "{svg}");
    }
}
