//! The `/stats` page: the `summary` and the newest `hits`, for a person to look at.
//!
//! Plain server-rendered HTML with inline CSS and no scripts or external assets, so
//! it works offline and behind any proxy. It refreshes itself every few seconds.

use std::fmt::Write;

use counter_api::{LatestHits, PageTotal, PagesOverview, ServerId, Summary};

use crate::chart;
use crate::markup::{escape, page_start, thousands};

pub fn render(
    summary: &Summary,
    latest: &LatestHits,
    this_server: &ServerId,
    pages: &PagesOverview,
) -> String {
    let mut page = String::with_capacity(16 * 1024);
    let most = summary.servers.iter().map(|s| s.total).max().unwrap_or(0);
    page_start(
        &mut page,
        &format!("awesome-counter: {} hits", summary.total_hits),
        Some(5),
    );
    let _ = write!(
        page,
        r#"<h1>awesome-counter</h1>
<div class="muted">Page hits recorded across all app servers. This page was served by <code>{this}</code> and refreshes every 5&nbsp;s.</div>
<div class="total">{total}</div>
<h2>Hits per app server</h2>
<table>
<tr><th>Server</th><th></th><th class="n">Hits</th></tr>
"#,
        total = summary.total_hits,
        this = escape(this_server.as_str()),
    );
    if summary.servers.is_empty() {
        page.push_str("<tr><td colspan=\"3\" class=\"muted\">No hits yet. Visit <a href=\"/\">/</a> to make one.</td></tr>\n");
    }
    for server in &summary.servers {
        let percent = if most == 0 {
            0.0
        } else {
            server.total as f64 * 100.0 / most as f64
        };
        let _ = writeln!(
            page,
            r#"<tr><td><code>{name}</code></td><td style="width:60%"><div class="bar" style="width:{percent:.1}%"></div></td><td class="n">{total}</td></tr>"#,
            name = escape(server.server.as_str()),
            total = server.total,
        );
    }
    page.push_str("</table>\n<h2>Latest hits</h2>\n<table>\n<tr><th>Time (UTC)</th><th>Server</th><th>Hit id</th></tr>\n");
    for hit in &latest.hits {
        let _ = writeln!(
            page,
            "<tr><td>{time}</td><td><code>{server}</code></td><td><code>{id}</code></td></tr>",
            time = utc(hit.ts.as_u64()),
            server = escape(hit.server.as_str()),
            id = hit.id,
        );
    }
    page.push_str("</table>\n");
    named_counters(&mut page, pages);
    page.push_str("<div class=\"muted\">JSON: <a href=\"/api/stats\">/api/stats</a></div>\n</body>\n</html>\n");
    page
}

/// The named counters at a glance, below the tutorial's counter.
fn named_counters(page: &mut String, pages: &PagesOverview) {
    if pages.top_all_time.is_empty() {
        page.push_str(
            "<h2>Named counters</h2>\n<p class=\"muted\">No named counters yet. A counter starts with its first hit: \
             show <code>/badge/&lt;key&gt;.svg</code> as an image on a page, or send \
             <code>POST /api/pages/&lt;key&gt;</code>.</p>\n",
        );
        return;
    }
    let days: Vec<_> = pages.days.iter().map(|d| (d.day, d.hits)).collect();
    page.push_str("<h2>Hits per day (all counters)</h2>\n");
    page.push_str(&chart::daily_bars(
        &days,
        &format!("Hits per day on all counters, last {} days", days.len()),
    ));
    page.push_str("<h2>Top counters, all time</h2>\n");
    counter_table(page, &pages.top_all_time, "No hits yet.");
    page.push_str("<h2>Top counters today (UTC)</h2>\n");
    counter_table(page, &pages.top_today, "No hits today yet.");
}

fn counter_table(page: &mut String, counters: &[PageTotal], when_empty: &str) {
    page.push_str("<table>\n<tr><th>Counter</th><th class=\"n\">Hits</th></tr>\n");
    if counters.is_empty() {
        let _ = writeln!(
            page,
            r#"<tr><td colspan="2" class="muted">{when_empty}</td></tr>"#
        );
    }
    for counter in counters {
        let key = escape(counter.key.as_str());
        let _ = writeln!(
            page,
            r#"<tr><td><a href="/stats/{key}"><code>{key}</code></a></td><td class="n">{hits}</td></tr>"#,
            hits = thousands(counter.hits),
        );
    }
    page.push_str("</table>\n");
}

/// `2026-11-24 20:41:07.123`, without pulling a date crate into the component.
fn utc(millis: u64) -> String {
    let days = (millis / 86_400_000) as i64;
    let ms_of_day = millis % 86_400_000;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use counter_api::{Day, DayHits, Hit, ServerTotal};

    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(1_450_220_086_392), "2015-12-15 22:54:46.392");
        assert_eq!(utc(1_709_164_800_000), "2024-02-29 00:00:00.000");
        assert_eq!(utc(4_102_444_799_999), "2099-12-31 23:59:59.999");
    }

    #[test]
    fn page_shows_totals_and_escapes_server_ids() {
        let evil: ServerId = "<script>alert(1)</script>".parse().unwrap();
        let summary = Summary {
            total_hits: 33,
            servers: vec![
                ServerTotal {
                    server: "10.0.0.2".parse().unwrap(),
                    total: 8,
                },
                ServerTotal {
                    server: evil.clone(),
                    total: 25,
                },
            ],
        };
        let latest = LatestHits {
            hits: vec![Hit {
                id: "d675c5b2-a37e-11e5-a948-02420a000005".parse().unwrap(),
                server: evil.clone(),
                ts: counter_api::EpochMillis::new(1_450_220_086_392).unwrap(),
            }],
        };
        let page = render(&summary, &latest, &evil, &PagesOverview::default());
        assert!(page.contains(r#"<div class="total">33</div>"#));
        assert!(
            page.contains("width:32.0%"),
            "8 of 25 is 32% of the widest bar"
        );
        assert!(page.contains("2015-12-15 22:54:46.392"));
        assert!(!page.contains("<script>"), "server ids must be escaped");
        assert!(page.contains("&lt;script&gt;"));
        assert!(
            page.contains("No named counters yet") && page.contains("/badge/&lt;key&gt;.svg"),
            "explains how to make a named counter"
        );
        assert!(chart::charts_in(&page).is_empty());
    }

    #[test]
    fn page_shows_named_counters() {
        let first: Day = "2026-03-01".parse().unwrap();
        let total = |key: &str, hits| PageTotal {
            key: key.parse().unwrap(),
            hits,
        };
        let pages = PagesOverview {
            top_all_time: vec![
                total("blog/2026/hello", 1_234_567),
                total("github.com/o/r", 9),
            ],
            top_today: vec![total("github.com/o/r", 4)],
            days: (0..30)
                .map(|i| DayHits {
                    day: Day::from_days_since_epoch(first.days_since_epoch() + i).unwrap(),
                    hits: u64::from(i) * 10,
                })
                .collect(),
        };
        let summary = Summary {
            total_hits: 0,
            servers: vec![],
        };
        let this: ServerId = "web-1".parse().unwrap();
        let page = render(&summary, &LatestHits { hits: vec![] }, &this, &pages);

        assert!(!page.contains("No named counters yet"));
        let sections = [
            "<h2>Hits per day (all counters)</h2>",
            "<h2>Top counters, all time</h2>",
            "<h2>Top counters today (UTC)</h2>",
        ];
        let positions: Vec<usize> = sections.iter().map(|s| page.find(s).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "in this order");
        assert!(page.find("<h2>Latest hits</h2>").unwrap() < positions[0]);

        let charts = chart::charts_in(&page);
        assert_eq!(charts.len(), 1);
        assert_eq!(chart::bar_count(charts[0]), 30);

        let top = &page[positions[1]..positions[2]];
        assert!(top.contains(
            r#"<a href="/stats/blog/2026/hello"><code>blog/2026/hello</code></a></td><td class="n">1,234,567</td>"#
        ));
        assert!(top.find("blog/2026/hello").unwrap() < top.find("github.com/o/r").unwrap());
        let today = &page[positions[2]..];
        assert!(today.contains(r#"<a href="/stats/github.com/o/r">"#));
        assert!(!today.contains("blog/2026/hello"));

        let quiet = PagesOverview {
            top_today: vec![],
            ..pages
        };
        let page = render(&summary, &LatestHits { hits: vec![] }, &this, &quiet);
        assert!(page.contains("No hits today yet."));
    }
}
