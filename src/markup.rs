//! What every page and badge the component draws shares: the pages' head and
//! stylesheet, escaping for HTML and SVG, and numbers written for people.

use std::fmt::Write;

/// Everything before a page's content, through `<body>`: the one stylesheet all
/// the component's pages share.
pub(crate) fn page_start(page: &mut String, title: &str, refresh_seconds: Option<u32>) {
    let refresh = refresh_seconds
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">\n"))
        .unwrap_or_default();
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title}</title>
<style>
body {{ font: 16px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 48rem; padding: 0 1rem; color: #1d2330; }}
h1 {{ font-size: 1.4rem; margin-bottom: .2rem; overflow-wrap: anywhere; }}
.total {{ font-size: 3rem; font-weight: 700; margin: .5rem 0 1.5rem; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 2rem; }}
th, td {{ text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e3e6ec; }}
td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; width: 6rem; }}
td a {{ overflow-wrap: anywhere; }}
div.bar {{ background: #4f7cff; height: .8rem; border-radius: .2rem; min-width: 2px; }}
svg.chart {{ display: block; margin: .5rem 0 2rem; }}
.muted {{ color: #6b7280; font-size: .9rem; }}
.today {{ display: flex; flex-wrap: wrap; gap: .5rem 2.5rem; margin-bottom: 1.5rem; }}
.today b {{ display: block; font-size: 1.6rem; font-variant-numeric: tabular-nums; }}
.box {{ border: 1px solid #e3e6ec; border-radius: .5rem; padding: 0 1rem; margin-bottom: 2rem; }}
pre {{ background: #f4f5f8; padding: .5rem; overflow-x: auto; }}
code {{ font-size: .85rem; }}
h1 code {{ font-size: inherit; }}
</style>
</head>
<body>
"#,
        title = escape(title),
    );
}

/// Text for HTML or SVG, in content or in a quoted attribute: server ids, labels
/// and captions are chosen by people and must not become markup.
pub(crate) fn escape(text: &str) -> String {
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

/// `12,345,678`: counts on the pages and badges are read by people.
pub(crate) fn thousands(count: u64) -> String {
    let digits = count.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        for (count, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (12_345, "12,345"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(thousands(count), text);
        }
    }

    #[test]
    fn escapes_all_five_characters() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
