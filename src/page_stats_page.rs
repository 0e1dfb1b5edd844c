//! The `/stats/<key>` page: one named counter's total, today, history and badge.
//!
//! Like `/stats`, plain server-rendered HTML with no scripts or external assets.
//! It records nothing: its badge preview asks for `count=false`, so looking at a
//! counter's statistics does not add to them.

use std::fmt::Write;

use counter_api::{DayCount, PageStats};

use crate::chart;
use crate::markup::{escape, page_start, thousands};

/// The days the short chart and the table show.
const RECENT_DAYS: usize = 30;
/// The days the long chart shows.
const YEAR_DAYS: usize = 365;

/// The page for `stats`, whose `days` run oldest first and end with today.
pub fn render(stats: &PageStats) -> String {
    let key = escape(stats.key.as_str());
    let recent = last(&stats.days, RECENT_DAYS);
    let mut page = String::with_capacity(32 * 1024 + stats.days.len() * 200);
    page_start(
        &mut page,
        &format!(
            "{}: {} hits · awesome-counter",
            stats.key,
            thousands(stats.total)
        ),
        None,
    );
    let _ = write!(
        page,
        r#"<div class="muted"><a href="/stats">&larr; all counters</a></div>
<h1><code>{key}</code></h1>
<div class="muted">Hits on this counter. Days are UTC; unique visitors are estimated.</div>
<div class="total">{total}</div>
{base}<div class="today"><div><b>{today_hits}</b> hits today</div><div><b>{today_visitors}</b> unique visitors today</div></div>
<h2>Last {recent_days} days</h2>
"#,
        total = thousands(stats.total),
        // Imported views are part of the total but of no day: say so, or the
        // days would seem not to add up.
        base = stats.base.map_or_else(String::new, |base| format!(
            "<div class=\"muted\">of which {} imported from another counter, counted before the days below</div>\n",
            thousands(base.count)
        )),
        today_hits = thousands(stats.today.hits),
        today_visitors = thousands(stats.today.visitors),
        recent_days = RECENT_DAYS,
    );
    page.push_str(&chart::daily_bars(
        &bars(recent),
        &format!("Hits per day on {}, last {} days", stats.key, recent.len()),
    ));
    let _ = writeln!(page, "<h2>Last {YEAR_DAYS} days</h2>");
    let year = last(&stats.days, YEAR_DAYS);
    page.push_str(&chart::daily_bars(
        &bars(year),
        &format!("Hits per day on {}, last {} days", stats.key, year.len()),
    ));

    page.push_str(
        "<h2>Day by day</h2>\n<table>\n<tr><th>Day (UTC)</th><th class=\"n\">Hits</th><th class=\"n\">Unique visitors</th></tr>\n",
    );
    for day in recent.iter().rev() {
        let _ = writeln!(
            page,
            r#"<tr><td>{date}</td><td class="n">{hits}</td><td class="n">{visitors}</td></tr>"#,
            date = day.day,
            hits = thousands(day.hits),
            visitors = thousands(day.visitors),
        );
    }
    let logo = if cfg!(feature = "logos") {
        "<code>logo=</code> (a Simple Icons slug such as <code>github</code>) and <code>logo_color=</code>, "
    } else {
        ""
    };
    let _ = write!(
        page,
        r#"</table>
<div class="box">
<h2>Put it on your page</h2>
<p><img src="/badge/{key}.svg?count=false" alt="hits badge of {key}"></p>
<p>Every time a browser loads <a href="/badge/{key}.svg?count=false"><code>/badge/{key}.svg</code></a> it counts one hit and shows the total. In a README or on a page elsewhere, put this site's address in front of it:</p>
<pre><code>![hits](https://&lt;this site&gt;/badge/{key}.svg)</code></pre>
<p class="muted">Options: <code>?label=visitors</code> (empty for the count alone), <code>color=</code> and <code>label_color=</code> (a shields.io color name or hex such as <code>4c1</code>), <code>style=</code> <code>flat</code>, <code>flat-square</code>, <code>plastic</code>, <code>social</code> or <code>for-the-badge</code>, {logo}<code>link=</code> (where a click on the badge leads, when it is not in an <code>&lt;img&gt;</code>), and <code>count=false</code> to show the count without counting a hit.</p>
</div>
</body>
</html>
"#
    );
    page
}

/// The newest `n` days of `days`, oldest first.
fn last(days: &[DayCount], n: usize) -> &[DayCount] {
    &days[days.len().saturating_sub(n)..]
}

fn bars(days: &[DayCount]) -> Vec<(counter_api::Day, u64)> {
    days.iter().map(|d| (d.day, d.hits)).collect()
}

#[cfg(test)]
mod tests {
    use counter_api::{Day, PageKey};

    use super::*;

    /// A year of days ending on 2026-03-31: day `i` (0 = oldest) has `i` hits and
    /// `i / 2` visitors.
    fn year_of_stats(key: &str) -> PageStats {
        let today: Day = "2026-03-31".parse().unwrap();
        let days: Vec<DayCount> = (0..365u32)
            .map(|i| DayCount {
                day: today.minus(364 - i),
                hits: u64::from(i),
                visitors: u64::from(i / 2),
            })
            .collect();
        PageStats {
            key: key.parse::<PageKey>().unwrap(),
            total: 1_234_567,
            base: None,
            today: *days.last().unwrap(),
            days,
        }
    }

    #[test]
    fn shows_the_numbers_both_charts_and_the_table() {
        let page = render(&year_of_stats("blog/2026/hello"));
        assert!(page.contains("<h1><code>blog/2026/hello</code></h1>"));
        assert!(page.contains(r#"<div class="total">1,234,567</div>"#));
        assert!(page.contains("<b>364</b> hits today"));
        assert!(page.contains("<b>182</b> unique visitors today"));
        assert!(page.contains(r#"<a href="/stats">"#));
        assert!(page.contains(r#"<meta name="viewport""#));
        assert!(!page.contains("<script"));

        let charts = chart::charts_in(&page);
        assert_eq!(charts.len(), 2);
        assert_eq!(chart::bar_count(charts[0]), 30);
        assert_eq!(chart::bar_count(charts[1]), 365);
        assert!(charts[0].contains(r#"data-day="2026-03-02""#));
        assert!(!charts[0].contains(r#"data-day="2026-03-01""#));
        assert!(charts[1].contains(r#"data-day="2025-04-01""#));

        let table_start = page.find("<h2>Day by day</h2>").unwrap();
        let table = &page[table_start..page.find(r#"<div class="box">"#).unwrap()];
        assert_eq!(table.matches("<tr><td>").count(), 30);
        let newest = table.find("<td>2026-03-31</td>").unwrap();
        let oldest = table.find("<td>2026-03-02</td>").unwrap();
        assert!(newest < oldest, "newest first");
        assert!(table.contains(
            r#"<tr><td>2026-03-31</td><td class="n">364</td><td class="n">182</td></tr>"#
        ));
    }

    #[test]
    fn badge_box_previews_without_counting() {
        let page = render(&year_of_stats("github.com/owner/repo"));
        assert!(page.contains(r#"<img src="/badge/github.com/owner/repo.svg?count=false""#));
        assert!(
            page.contains("![hits](https://&lt;this site&gt;/badge/github.com/owner/repo.svg)")
        );
        assert!(
            !page.contains(r#"src="/badge/github.com/owner/repo.svg""#),
            "every image on the page must not count"
        );
    }

    #[test]
    fn few_days_and_no_hits() {
        let mut stats = year_of_stats("a");
        stats.days.drain(..360);
        stats.days.iter_mut().for_each(|d| d.hits = 0);
        let page = render(&stats);
        let charts = chart::charts_in(&page);
        assert_eq!(chart::bar_count(charts[0]), 5);
        assert_eq!(chart::bar_count(charts[1]), 5);
        assert!(!page.contains("NaN"));
    }

    #[test]
    fn key_names_the_page_and_its_charts() {
        let page = render(&year_of_stats("a-b_c.d~e"));
        assert!(page.contains("<title>a-b_c.d~e: 1,234,567 hits · awesome-counter</title>"));
        let charts = chart::charts_in(&page);
        assert!(charts[0].contains(r#"aria-label="Hits per day on a-b_c.d~e, last 30 days""#));
        assert!(charts[1].contains(r#"aria-label="Hits per day on a-b_c.d~e, last 365 days""#));
    }
}
