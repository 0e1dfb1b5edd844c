//! The `/stats` page: the `summary` and the newest `hits`, for a person to look at.
//!
//! Plain server-rendered HTML with inline CSS and no scripts or external assets, so
//! it works offline and behind any proxy. It refreshes itself every few seconds.

use std::fmt::Write;

use counter_api::{LatestHits, ServerId, Summary};

pub fn render(summary: &Summary, latest: &LatestHits, this_server: &ServerId) -> String {
    let mut page = String::with_capacity(8 * 1024);
    let most = summary.servers.iter().map(|s| s.total).max().unwrap_or(0);
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>awesome-counter: {total} hits</title>
<style>
body {{ font: 16px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 48rem; padding: 0 1rem; color: #1d2330; }}
h1 {{ font-size: 1.4rem; margin-bottom: .2rem; }}
.total {{ font-size: 3rem; font-weight: 700; margin: .5rem 0 1.5rem; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 2rem; }}
th, td {{ text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e3e6ec; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; width: 6rem; }}
.bar {{ background: #4f7cff; height: .8rem; border-radius: .2rem; min-width: 2px; }}
.muted {{ color: #6b7280; font-size: .9rem; }}
code {{ font-size: .85rem; }}
</style>
</head>
<body>
<h1>awesome-counter</h1>
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
    page.push_str("</table>\n<div class=\"muted\">JSON: <a href=\"/api/stats\">/api/stats</a></div>\n</body>\n</html>\n");
    page
}

/// Server ids are user-chosen strings; they must not become markup.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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
    use counter_api::{Hit, ServerTotal};

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
        let page = render(&summary, &latest, &evil);
        assert!(page.contains(r#"<div class="total">33</div>"#));
        assert!(
            page.contains("width:32.0%"),
            "8 of 25 is 32% of the widest bar"
        );
        assert!(page.contains("2015-12-15 22:54:46.392"));
        assert!(!page.contains("<script>"), "server ids must be escaped");
        assert!(page.contains("&lt;script&gt;"));
    }
}
