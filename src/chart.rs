//! Bar charts of hits per day, drawn as inline SVG for the stats pages.
//!
//! No script and no chart library: every bar is a `<rect>` with a `<title>`, which
//! browsers show as a tooltip, and `data-*` attributes for anyone scraping the
//! page. The chart is as wide as the page and a fixed number of pixels high, so
//! its labels stay readable on a phone while the bars stretch to any width.

use std::fmt::Write;

use counter_api::Day;

use crate::markup::{escape, thousands};

/// Pixel layout, top to bottom: the maximum's label, the plot, the day labels.
const HEIGHT: u32 = 172;
const PLOT_TOP: u32 = 20;
const PLOT_HEIGHT: u32 = 128;
const DAY_LABELS: u32 = PLOT_TOP + PLOT_HEIGHT + 17;
/// The plot's own vertical units: bar heights are thousandths of the chart's
/// maximum, which keeps them proportional whatever the pixel height.
const SCALE: f64 = 1000.0;
/// Up to this many days, bars stand apart; past it a gap would be thinner than a
/// pixel on a phone and the bars are drawn side by side.
const MAX_DAYS_WITH_GAPS: usize = 60;

const BAR_COLOR: &str = "#4f7cff";
const TEXT_COLOR: &str = "#6b7280";
const RULE_COLOR: &str = "#e3e6ec";
const AXIS_COLOR: &str = "#9ca3af";

/// A chart of `days` (oldest first), one bar a day, for embedding in an HTML page.
///
/// `caption` is the chart's accessible name; it is text, escaped here.
pub fn daily_bars(days: &[(Day, u64)], caption: &str) -> String {
    let most = days.iter().map(|&(_, hits)| hits).max().unwrap_or(0);
    let top = nice_ceiling(most);
    let columns = days.len().max(1);
    let (inset, bar_width) = if days.len() <= MAX_DAYS_WITH_GAPS {
        (0.1, 0.8)
    } else {
        (0.0, 1.0)
    };

    let mut svg = String::with_capacity(256 + days.len() * 160);
    let _ = writeln!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="100%" height="{HEIGHT}" role="img" aria-label="{caption}" font-family="system-ui, sans-serif" font-size="12" fill="{TEXT_COLOR}">"#,
        caption = escape(caption),
    );
    if most == 0 {
        let _ = writeln!(
            svg,
            r#"<text x="50%" y="{y}" text-anchor="middle">{message}</text>"#,
            y = PLOT_TOP + PLOT_HEIGHT / 2,
            message = if days.is_empty() {
                "No days to show"
            } else {
                "No hits in these days"
            },
        );
    } else {
        let _ = writeln!(
            svg,
            r#"<text x="0" y="{y}">{top}</text><line x1="0" x2="100%" y1="{PLOT_TOP}" y2="{PLOT_TOP}" stroke="{RULE_COLOR}"/>"#,
            y = PLOT_TOP - 6,
            top = thousands(top),
        );
    }
    // The plot stretches to the chart's width without stretching any text.
    let _ = writeln!(
        svg,
        r#"<svg y="{PLOT_TOP}" width="100%" height="{PLOT_HEIGHT}" viewBox="0 0 {columns} {SCALE}" preserveAspectRatio="none">"#
    );
    for (column, &(day, hits)) in days.iter().enumerate() {
        let height = if top == 0 {
            0.0
        } else {
            hits as f64 / top as f64 * SCALE
        };
        let _ = writeln!(
            svg,
            r#"<rect class="bar" data-day="{day}" data-hits="{hits}" x="{x}" y="{y}" width="{bar_width}" height="{height}" fill="{BAR_COLOR}"><title>{day}: {count} {unit}</title></rect>"#,
            x = coordinate(column as f64 + inset),
            y = coordinate(SCALE - height),
            height = coordinate(height),
            count = thousands(hits),
            unit = if hits == 1 { "hit" } else { "hits" },
        );
    }
    let _ = writeln!(
        svg,
        r#"</svg>
<line x1="0" x2="100%" y1="{y}" y2="{y}" stroke="{AXIS_COLOR}"/>"#,
        y = PLOT_TOP + PLOT_HEIGHT,
    );
    if let Some(&(first, _)) = days.first() {
        let _ = writeln!(svg, r#"<text x="0" y="{DAY_LABELS}">{first}</text>"#);
    }
    if days.len() > 1
        && let Some(&(last, _)) = days.last()
    {
        let _ = writeln!(
            svg,
            r#"<text x="100%" y="{DAY_LABELS}" text-anchor="end">{last}</text>"#
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `most`, so
/// the axis reads 500 or 2,500 rather than 437; 0 stays 0.
fn nice_ceiling(most: u64) -> u64 {
    if most == 0 {
        return 0;
    }
    let most = u128::from(most);
    let mut power = 1u128;
    loop {
        for step in [10, 20, 25, 50] {
            let candidate = step * power / 10;
            // 2.5 is not a whole number of hits.
            if candidate * 10 == step * power && candidate >= most {
                return u64::try_from(candidate).unwrap_or(u64::MAX);
            }
        }
        power *= 10;
    }
}

/// A plot coordinate to a tenth of a unit, without a trailing `.0`.
fn coordinate(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

/// The charts in an HTML page, each as its own SVG document.
#[cfg(test)]
pub(crate) fn charts_in(html: &str) -> Vec<&str> {
    let mut charts = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(r#"<svg class="chart""#) {
        let mut depth = 0;
        let mut at = start;
        loop {
            let open = rest[at + 1..].find("<svg").map(|i| i + at + 1);
            let close = rest[at + 1..]
                .find("</svg>")
                .map(|i| i + at + 1)
                .expect("closed");
            match open {
                Some(open) if open < close => {
                    depth += 1;
                    at = open;
                }
                _ if depth > 0 => {
                    depth -= 1;
                    at = close;
                }
                _ => {
                    let end = close + "</svg>".len();
                    charts.push(&rest[start..end]);
                    rest = &rest[end..];
                    break;
                }
            }
        }
    }
    charts
}

/// How many day bars a chart draws.
#[cfg(test)]
pub(crate) fn bar_count(svg: &str) -> usize {
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("bar"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(hits: &[u64]) -> Vec<(Day, u64)> {
        let first: Day = "2026-01-01".parse().unwrap();
        let start = first.days_since_epoch();
        hits.iter()
            .enumerate()
            .map(|(i, &h)| (Day::from_days_since_epoch(start + i as u32).unwrap(), h))
            .collect()
    }

    struct Bar {
        day: String,
        hits: u64,
        height: f64,
        title: String,
    }

    fn bars(svg: &str) -> Vec<Bar> {
        let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
        doc.descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("bar"))
            .map(|n| Bar {
                day: n.attribute("data-day").unwrap().to_owned(),
                hits: n.attribute("data-hits").unwrap().parse().unwrap(),
                height: n.attribute("height").unwrap().parse().unwrap(),
                title: n
                    .children()
                    .find(|c| c.has_tag_name("title"))
                    .and_then(|c| c.text())
                    .unwrap()
                    .to_owned(),
            })
            .collect()
    }

    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_owned))
            .collect()
    }

    #[test]
    fn one_bar_a_day_oldest_first() {
        for n in [1, 30, 365] {
            let hits: Vec<u64> = (0..n).collect();
            let svg = daily_bars(&days(&hits), "Hits per day");
            let drawn = bars(&svg);
            assert_eq!(drawn.len(), n as usize);
            assert_eq!(drawn[0].day, "2026-01-01");
            assert!(drawn.windows(2).all(|w| w[0].day < w[1].day));
            assert_eq!(drawn.iter().map(|b| b.hits).collect::<Vec<_>>(), hits);
            assert!(!svg.starts_with("<?xml"), "embedded in HTML");
        }
    }

    #[test]
    fn heights_are_proportional_to_hits() {
        let svg = daily_bars(&days(&[100, 50, 0, 25, 1]), "c");
        let heights: Vec<f64> = bars(&svg).iter().map(|b| b.height).collect();
        assert_eq!(heights, [1000.0, 500.0, 0.0, 250.0, 10.0]);

        // 437 is drawn against an axis up to 500.
        let svg = daily_bars(&days(&[437, 218, 3]), "c");
        let drawn = bars(&svg);
        assert!(
            (drawn[0].height - 874.0).abs() <= 0.1,
            "{}",
            drawn[0].height
        );
        assert!((drawn[1].height * 2.0 - drawn[0].height).abs() <= 2.0);
        assert!(texts(&svg).contains(&"500".to_owned()));
    }

    #[test]
    fn axis_maximum_is_a_round_number() {
        for (most, top) in [
            (1, 1),
            (2, 2),
            (3, 5),
            (7, 10),
            (11, 20),
            (21, 25),
            (26, 50),
            (100, 100),
            (101, 200),
            (2_001, 2_500),
            (123_456, 200_000),
            (u64::MAX, u64::MAX),
        ] {
            assert_eq!(nice_ceiling(most), top, "{most}");
        }
        assert_eq!(nice_ceiling(0), 0);
        let svg = daily_bars(&days(&[1_234, 12]), "c");
        assert!(texts(&svg).contains(&"2,000".to_owned()), "{svg}");
    }

    #[test]
    fn tooltips_and_day_labels() {
        let svg = daily_bars(&days(&[1, 1_234, 0]), "c");
        let titles: Vec<String> = bars(&svg).into_iter().map(|b| b.title).collect();
        assert_eq!(
            titles,
            [
                "2026-01-01: 1 hit",
                "2026-01-02: 1,234 hits",
                "2026-01-03: 0 hits"
            ]
        );
        let labels = texts(&svg);
        assert!(labels.contains(&"2026-01-01".to_owned()));
        assert!(labels.contains(&"2026-01-03".to_owned()));
        let single = texts(&daily_bars(&days(&[5]), "c"));
        assert_eq!(single.iter().filter(|t| *t == "2026-01-01").count(), 1);
    }

    #[test]
    fn caption_is_escaped() {
        let caption = r#"Hits on <script>alert("x")</script> & 'co'"#;
        let svg = daily_bars(&days(&[1, 2]), caption);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("aria-label"), Some(caption));
        assert_eq!(root.attribute("role"), Some("img"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn no_hits_and_no_days_draw_without_nan() {
        for data in [days(&[0; 30]), days(&[0]), vec![]] {
            let svg = daily_bars(&data, "nothing yet");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            roxmltree::Document::parse(&svg).unwrap();
            assert!(bars(&svg).iter().all(|b| b.height == 0.0));
            assert_eq!(bars(&svg).len(), data.len());
        }
        let huge = daily_bars(&days(&[u64::MAX, u64::MAX / 2]), "c");
        let drawn = bars(&huge);
        assert_eq!(drawn[0].height, 1000.0);
        assert_eq!(drawn[1].height, 500.0);
    }

    #[test]
    fn dense_charts_have_no_gaps() {
        let wide = daily_bars(&days(&[1; 365]), "c");
        assert!(wide.contains(r#"x="364" y="0" width="1""#), "{wide}");
        let narrow = daily_bars(&days(&[1; 30]), "c");
        assert!(narrow.contains(r#"x="29.1" y="0" width="0.8""#));
    }
}
