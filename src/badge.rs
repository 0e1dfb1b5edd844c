//! `/badge/<key>.svg`: a counter drawn as a shields.io-style badge
//! ("hits | 12.3k"), the hit counter people put on a README or a page.
//!
//! The badge is a standalone SVG document that looks like the shields.io badges
//! it sits next to: the same styles, named colors, Verdana metrics and text
//! shadow. Everything a person can put in the query is validated into
//! [`BadgeOptions`] and escaped on the way out, so a badge URL cannot inject
//! markup into the pages that embed the image.

use std::fmt;
use std::fmt::Write;

use crate::markup::{escape, thousands};
use crate::query::{self, QueryError, shorten};

/// The query parameters a badge takes.
pub const PARAMETERS: [&str; 5] = ["label", "color", "label_color", "style", "count"];

/// Why a badge query was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadgeError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(
        "the label is {0} characters long; at most {max} are allowed",
        max = BadgeOptions::MAX_LABEL_CHARS
    )]
    LabelTooLong(usize),
    #[error("the label must not contain control characters (found U+{0:04X})")]
    LabelControl(u32),
    #[error(
        "{parameter}={value:?} is not a color: use one of {names}, or three or six hex digits \
         such as 4c1 or 007ec6 (a leading # must be written %23 in a URL)",
        names = color_names()
    )]
    Color {
        parameter: &'static str,
        value: String,
    },
    #[error(
        "style={0:?} is not a badge style: use {styles}",
        styles = Style::ALL.map(Style::name).join(", ")
    )]
    Style(String),
    #[error(
        "count={0:?} is not true or false: count=true (or 1, the default) counts this view \
         as a hit, count=false (or 0) shows the counter without counting"
    )]
    Count(String),
}

/// How a badge looks, and whether showing it counts a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadgeOptions {
    /// The left part's text. Empty draws the count alone.
    pub label: String,
    /// The count's background.
    pub color: Color,
    /// The label's background.
    pub label_color: Color,
    pub style: Style,
    /// Whether this request is a hit. `false` shows the current count without
    /// adding to it: for previews, such as the one on the counter's stats page.
    pub count: bool,
}

impl BadgeOptions {
    pub const MAX_LABEL_CHARS: usize = 64;

    /// The options a badge query asks for; anything not given keeps its default.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, BadgeError> {
        query::reject_unknown(pairs, &PARAMETERS)?;
        let mut options = Self::default();
        if let Some(label) = query::one(pairs, "label")? {
            options.label = parse_label(label)?;
        }
        if let Some(color) = query::one(pairs, "color")? {
            options.color = Color::parse("color", color)?;
        }
        if let Some(color) = query::one(pairs, "label_color")? {
            options.label_color = Color::parse("label_color", color)?;
        }
        if let Some(style) = query::one(pairs, "style")? {
            options.style = Style::ALL
                .into_iter()
                .find(|s| s.name() == style)
                .ok_or_else(|| BadgeError::Style(shorten(style)))?;
        }
        if let Some(count) = query::one(pairs, "count")? {
            options.count = match count {
                "true" | "1" => true,
                "false" | "0" => false,
                other => return Err(BadgeError::Count(shorten(other))),
            };
        }
        Ok(options)
    }
}

impl Default for BadgeOptions {
    /// A count is information rather than a pass or a failure, so it gets
    /// shields' "informational" blue, not the green of a passing build.
    fn default() -> Self {
        Self {
            label: "hits".to_owned(),
            color: Color::BLUE,
            label_color: Color::GREY,
            style: Style::Flat,
            count: true,
        }
    }
}

fn parse_label(label: &str) -> Result<String, BadgeError> {
    if let Some(c) = label.chars().find(|c| c.is_control()) {
        return Err(BadgeError::LabelControl(c.into()));
    }
    let label = label.trim();
    let chars = label.chars().count();
    if chars > BadgeOptions::MAX_LABEL_CHARS {
        return Err(BadgeError::LabelTooLong(chars));
    }
    Ok(label.to_owned())
}

/// shields.io's badge styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Flat,
    FlatSquare,
    Plastic,
    ForTheBadge,
}

impl Style {
    const ALL: [Self; 4] = [
        Self::Flat,
        Self::FlatSquare,
        Self::Plastic,
        Self::ForTheBadge,
    ];

    /// The name in a query, as shields spells it.
    fn name(self) -> &'static str {
        match self {
            Self::Flat => "flat",
            Self::FlatSquare => "flat-square",
            Self::Plastic => "plastic",
            Self::ForTheBadge => "for-the-badge",
        }
    }

    fn geometry(self) -> Geometry {
        let flat = Geometry {
            height: 20,
            radius: 3,
            font_size: 11.0,
            padding: 5.0,
            baseline: 14,
            shadow: true,
            gradient: Some(FLAT_GRADIENT),
            uppercase: false,
        };
        match self {
            Self::Flat => flat,
            Self::FlatSquare => Geometry {
                radius: 0,
                shadow: false,
                gradient: None,
                ..flat
            },
            Self::Plastic => Geometry {
                height: 18,
                radius: 4,
                baseline: 13,
                gradient: Some(PLASTIC_GRADIENT),
                ..flat
            },
            Self::ForTheBadge => Geometry {
                height: 28,
                radius: 0,
                font_size: 10.0,
                padding: 12.0,
                baseline: 18,
                shadow: false,
                gradient: None,
                uppercase: true,
            },
        }
    }
}

/// An sRGB color, parsed from a shields color name or hex digits so that no
/// query text ever reaches the SVG as a color.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    red: u8,
    green: u8,
    blue: u8,
}

impl Color {
    const BLUE: Self = Self::rgb(0x00, 0x7e, 0xc6);
    const GREY: Self = Self::rgb(0x55, 0x55, 0x55);

    const fn rgb(red: u8, green: u8, blue: u8) -> Self {
        Self { red, green, blue }
    }

    fn parse(parameter: &'static str, text: &str) -> Result<Self, BadgeError> {
        let refuse = || BadgeError::Color {
            parameter,
            value: shorten(text),
        };
        if let Some((_, color)) = NAMED_COLORS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
        {
            return Ok(*color);
        }
        let hex = text.strip_prefix('#').unwrap_or(text);
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse());
        }
        let channel = |digits: &str| u8::from_str_radix(digits, 16).map_err(|_| refuse());
        match hex.len() {
            3 => {
                let double = |i: usize| channel(&hex[i..=i].repeat(2));
                Ok(Self::rgb(double(0)?, double(1)?, double(2)?))
            }
            6 => Ok(Self::rgb(
                channel(&hex[0..2])?,
                channel(&hex[2..4])?,
                channel(&hex[4..6])?,
            )),
            _ => Err(refuse()),
        }
    }

    /// shields' rule (YIQ brightness above 0.69) for when white text would be
    /// hard to read, so badges match theirs color for color.
    fn is_light(self) -> bool {
        let brightness =
            299 * u32::from(self.red) + 587 * u32::from(self.green) + 114 * u32::from(self.blue);
        brightness > 255 * 690
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.red, self.green, self.blue)
    }
}

/// shields.io's named colors and their aliases.
const NAMED_COLORS: [(&str, Color); 16] = [
    ("brightgreen", Color::rgb(0x44, 0xcc, 0x11)),
    ("green", Color::rgb(0x97, 0xca, 0x00)),
    ("yellowgreen", Color::rgb(0xa4, 0xa6, 0x1d)),
    ("yellow", Color::rgb(0xdf, 0xb3, 0x17)),
    ("orange", Color::rgb(0xfe, 0x7d, 0x37)),
    ("red", Color::rgb(0xe0, 0x5d, 0x44)),
    ("blue", Color::BLUE),
    ("lightgrey", Color::rgb(0x9f, 0x9f, 0x9f)),
    ("lightgray", Color::rgb(0x9f, 0x9f, 0x9f)),
    ("grey", Color::GREY),
    ("gray", Color::GREY),
    ("success", Color::rgb(0x44, 0xcc, 0x11)),
    ("important", Color::rgb(0xfe, 0x7d, 0x37)),
    ("critical", Color::rgb(0xe0, 0x5d, 0x44)),
    ("informational", Color::BLUE),
    ("inactive", Color::rgb(0x9f, 0x9f, 0x9f)),
];

fn color_names() -> String {
    NAMED_COLORS.map(|(name, _)| name).join(", ")
}

/// The sizes of one style, in pixels.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    height: u32,
    radius: u32,
    font_size: f64,
    /// Space left and right of each text.
    padding: f64,
    baseline: u32,
    shadow: bool,
    gradient: Option<&'static str>,
    uppercase: bool,
}

const FLAT_GRADIENT: &str = r##"<stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/>"##;
const PLASTIC_GRADIENT: &str = r##"<stop offset="0" stop-color="#fff" stop-opacity=".7"/><stop offset=".1" stop-color="#aaa" stop-opacity=".1"/><stop offset=".9" stop-opacity=".3"/><stop offset="1" stop-opacity=".5"/>"##;

/// A complete SVG document: the label and the count, abbreviated (`12.3k`); its
/// title and accessible name carry the exact count (`hits: 12,345`).
pub fn render(options: &BadgeOptions, count: u64) -> String {
    let geometry = options.style.geometry();
    let title = if options.label.is_empty() {
        thousands(count)
    } else {
        format!("{}: {}", options.label, thousands(count))
    };
    let label = Part::new(&options.label, &geometry, 0, options.label_color, false);
    // for-the-badge sets the count in bold, as shields does.
    let shown = Part::new(
        &abbreviate(count),
        &geometry,
        label.width,
        options.color,
        geometry.uppercase,
    );
    let width = label.width + shown.width;
    let height = geometry.height;

    let mut svg = String::with_capacity(2048);
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{title}"><title>{title}</title>"#,
        title = escape(&title),
    );
    if let Some(stops) = geometry.gradient {
        let _ = write!(
            svg,
            r#"<linearGradient id="s" x2="0" y2="100%">{stops}</linearGradient>"#
        );
    }
    let _ = write!(
        svg,
        r##"<clipPath id="r"><rect width="{width}" height="{height}" rx="{radius}" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{label_width}" height="{height}" fill="{label_color}"/><rect x="{label_width}" width="{shown_width}" height="{height}" fill="{color}"/>"##,
        radius = geometry.radius,
        label_width = label.width,
        label_color = label.background,
        shown_width = shown.width,
        color = shown.background,
    );
    if geometry.gradient.is_some() {
        let _ = write!(
            svg,
            r#"<rect width="{width}" height="{height}" fill="url(#s)"/>"#
        );
    }
    // Drawn at ten times the size and scaled down, as shields does, so that
    // positions and text lengths keep a tenth of a pixel in whole numbers.
    let _ = write!(
        svg,
        r#"</g><g text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" text-rendering="geometricPrecision" font-size="{font}">"#,
        font = geometry.font_size * 10.0,
    );
    label.draw_text(&mut svg, &geometry);
    shown.draw_text(&mut svg, &geometry);
    svg.push_str("</g></svg>\n");
    svg
}

/// One half of a badge: its text and the box behind it.
struct Part {
    text: String,
    /// The text's estimated width, which `textLength` holds the drawn text to.
    text_width: f64,
    left: u32,
    /// Zero for an empty text: the badge then has only the other half.
    width: u32,
    background: Color,
    bold: bool,
}

impl Part {
    fn new(text: &str, geometry: &Geometry, left: u32, background: Color, bold: bool) -> Self {
        let text = if geometry.uppercase {
            text.to_uppercase()
        } else {
            text.to_owned()
        };
        // Verdana Bold is about a tenth wider than Verdana.
        let text_width = text_width(&text, geometry.font_size) * if bold { 1.1 } else { 1.0 };
        let width = if text.is_empty() {
            0
        } else {
            (text_width + 2.0 * geometry.padding).round() as u32
        };
        Self {
            text,
            text_width,
            left,
            width,
            background,
            bold,
        }
    }

    fn draw_text(&self, svg: &mut String, geometry: &Geometry) {
        if self.text.is_empty() {
            return;
        }
        let x = self.left * 10 + self.width * 5;
        let length = (self.text_width * 10.0).round() as u32;
        let weight = if self.bold {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let text = escape(&self.text);
        let (fill, shadow) = if self.background.is_light() {
            ("#333", "#ccc")
        } else {
            ("#fff", "#010101")
        };
        if geometry.shadow {
            let _ = write!(
                svg,
                r#"<text aria-hidden="true" x="{x}" y="{y}" fill="{shadow}" fill-opacity=".3" transform="scale(.1)" textLength="{length}"{weight}>{text}</text>"#,
                y = geometry.baseline * 10 + 10,
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" fill="{fill}" transform="scale(.1)" textLength="{length}"{weight}>{text}</text>"#,
            y = geometry.baseline * 10,
        );
    }
}

/// A count short enough for a badge: exact below 1,000, then `1.2k`, `12.3k`,
/// `123k`, `1.2M`, ... up to `Q` (quadrillion).
///
/// The figure is cut, never rounded up, so a badge never claims a milestone the
/// counter has not reached: 999,999 is `999k`, and `1M` appears at 1,000,000.
/// One decimal below 100 of a unit, none when it is `.0`.
pub fn abbreviate(count: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1_000_000_000_000_000, "Q"),
        (1_000_000_000_000, "T"),
        (1_000_000_000, "B"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    let Some(&(unit, suffix)) = UNITS.iter().find(|(unit, _)| count >= *unit) else {
        return count.to_string();
    };
    let whole = count / unit;
    let tenths = count % unit / (unit / 10);
    if whole < 100 && tenths > 0 {
        format!("{whole}.{tenths}{suffix}")
    } else {
        format!("{whole}{suffix}")
    }
}

/// The width of `text` in Verdana at `font_size` pixels, which is how shields
/// sizes a badge without a font renderer: the SVG's `textLength` then makes
/// whichever font the viewer has fill exactly this width.
fn text_width(text: &str, font_size: f64) -> f64 {
    let units: u32 = text.chars().map(advance).map(u32::from).sum();
    f64::from(units) * font_size / 1000.0
}

/// Verdana's advance width of `c` in thousandths of the font size.
fn advance(c: char) -> u16 {
    // Printable ASCII, from ' ' to '~', as in the font's metrics.
    const ASCII: [u16; 95] = [
        351, 393, 458, 818, 635, 1076, 726, 268, 454, 454, 635, 818, 363, 454, 363,
        454, // ' '../
        635, 635, 635, 635, 635, 635, 635, 635, 635, 635, // 0-9
        454, 454, 818, 818, 818, 545, 1000, // :;<=>?@
        683, 685, 698, 770, 632, 574, 775, 751, 420, 454, 692, 556, 842, 748, 787, 603, 787, 695,
        683, 616, 731, 683, 988, 685, 615, 685, // A-Z
        454, 454, 454, 818, 635, 635, // [\]^_`
        600, 623, 520, 623, 595, 351, 623, 632, 274, 344, 591, 274, 972, 632, 606, 623, 623, 426,
        520, 394, 632, 591, 818, 591, 591, 525, // a-z
        634, 454, 634, 818, // {|}~
    ];
    match u32::from(c) {
        code @ 0x20..=0x7e => ASCII[(code - 0x20) as usize],
        // Combining marks sit on the letter before them.
        0x0300..=0x036f | 0x200b..=0x200f | 0xfe00..=0xfe0f => 0,
        // CJK, Hangul, full-width forms and emoji take a full em.
        0x1100..=0x115f
        | 0x2e80..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1faff
        | 0x20000..=0x3fffd => 1000,
        // Other letters are about as wide as a digit.
        _ => 635,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(query: &str) -> Result<BadgeOptions, BadgeError> {
        BadgeOptions::from_query(&query::parse(query)?)
    }

    /// The document's width, and the text of every visible (not shadow) `<text>`.
    fn parsed(svg: &str) -> (f64, Vec<String>) {
        let doc = roxmltree::Document::parse(svg).expect("the badge is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        assert_eq!(root.attribute("role"), Some("img"));
        let width = root.attribute("width").unwrap().parse().unwrap();
        let texts = root
            .descendants()
            .filter(|n| n.has_tag_name("text") && n.attribute("aria-hidden").is_none())
            .map(|n| n.text().unwrap_or_default().to_owned())
            .collect();
        (width, texts)
    }

    fn title(svg: &str) -> String {
        let doc = roxmltree::Document::parse(svg).unwrap();
        let title = doc
            .descendants()
            .find(|n| n.has_tag_name("title"))
            .and_then(|n| n.text())
            .unwrap()
            .to_owned();
        assert_eq!(doc.root_element().attribute("aria-label"), Some(&*title));
        title
    }

    #[test]
    fn defaults() {
        let defaults = options("").unwrap();
        assert_eq!(defaults, BadgeOptions::default());
        assert_eq!(defaults.label, "hits");
        assert_eq!(defaults.color.to_string(), "#007ec6");
        assert_eq!(defaults.label_color.to_string(), "#555555");
        assert_eq!(defaults.style, Style::Flat);
        assert!(defaults.count);
    }

    #[test]
    fn parses_every_parameter() {
        let parsed = options(
            "label=page+views&color=orange&label_color=%23abc&style=for-the-badge&count=false",
        )
        .unwrap();
        assert_eq!(
            parsed,
            BadgeOptions {
                label: "page views".to_owned(),
                color: Color::rgb(0xfe, 0x7d, 0x37),
                label_color: Color::rgb(0xaa, 0xbb, 0xcc),
                style: Style::ForTheBadge,
                count: false,
            }
        );
        assert!(!options("count=0").unwrap().count);
        assert!(options("count=1").unwrap().count);
        assert!(options("count=true").unwrap().count);
        assert_eq!(options("label=++").unwrap().label, "", "trimmed");
        assert_eq!(options("label=").unwrap().label, "");
        let label = "é".repeat(64);
        assert_eq!(options(&format!("label={label}")).unwrap().label, label);
        for style in ["flat", "flat-square", "plastic", "for-the-badge"] {
            assert_eq!(
                options(&format!("style={style}")).unwrap().style.name(),
                style
            );
        }
    }

    #[test]
    fn colors() {
        let color = |text: &str| Color::parse("color", text).map(|c| c.to_string());
        assert_eq!(color("brightgreen"), Ok("#44cc11".to_owned()));
        assert_eq!(color("BrightGreen"), Ok("#44cc11".to_owned()));
        assert_eq!(color("success"), Ok("#44cc11".to_owned()));
        assert_eq!(color("critical"), Ok("#e05d44".to_owned()));
        assert_eq!(color("gray"), Ok("#555555".to_owned()));
        assert_eq!(color("inactive"), Ok("#9f9f9f".to_owned()));
        assert_eq!(color("4c1"), Ok("#44cc11".to_owned()));
        assert_eq!(color("#4C1"), Ok("#44cc11".to_owned()));
        assert_eq!(color("#007ec6"), Ok("#007ec6".to_owned()));
        assert_eq!(color("FE7D37"), Ok("#fe7d37".to_owned()));
        for bad in [
            "", "#", "purple", "12", "1234", "#12345", "1234567", "##abc", "+1+2+3", "0x123", "éé",
        ] {
            assert!(color(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_queries_say_what_is_allowed() {
        let message = |query: &str| options(query).unwrap_err().to_string();
        assert_eq!(
            message("colour=red"),
            "unknown parameter \"colour\"; the parameters allowed here are \
             label, color, label_color, style, count"
        );
        assert_eq!(
            message("style=flat&style=plastic"),
            "the parameter \"style\" is given more than once; give it once"
        );
        assert!(message("label=%zz").contains("broken percent escape"));
        assert_eq!(
            message(&format!("label={}", "x".repeat(65))),
            "the label is 65 characters long; at most 64 are allowed"
        );
        assert_eq!(
            message("label=a%0Ab"),
            "the label must not contain control characters (found U+000A)"
        );
        assert_eq!(
            message("color=purple"),
            "color=\"purple\" is not a color: use one of brightgreen, green, yellowgreen, yellow, \
             orange, red, blue, lightgrey, lightgray, grey, gray, success, important, critical, \
             informational, inactive, or three or six hex digits such as 4c1 or 007ec6 \
             (a leading # must be written %23 in a URL)"
        );
        assert!(
            message("label_color=%3Cscript%3E")
                .starts_with("label_color=\"<script>\" is not a color")
        );
        assert_eq!(
            message("style=social"),
            "style=\"social\" is not a badge style: use flat, flat-square, plastic, for-the-badge"
        );
        assert_eq!(
            message("count=yes"),
            "count=\"yes\" is not true or false: count=true (or 1, the default) counts this view \
             as a hit, count=false (or 0) shows the counter without counting"
        );
        let long = message(&format!("color={}", "z".repeat(5000)));
        assert!(long.len() < 400, "echoes too much: {long}");
    }

    #[test]
    fn shows_label_and_abbreviated_count_with_exact_title() {
        let svg = render(&BadgeOptions::default(), 12_345);
        let (_, texts) = parsed(&svg);
        assert_eq!(texts, ["hits", "12.3k"]);
        assert_eq!(title(&svg), "hits: 12,345");
        assert!(svg.starts_with("<svg "), "a document of its own: {svg}");
    }

    #[test]
    fn count_false_draws_the_same_badge() {
        let counting = options("label=views").unwrap();
        let preview = options("label=views&count=false").unwrap();
        assert_eq!(render(&counting, 7), render(&preview, 7));
    }

    #[test]
    fn labels_are_text_not_markup() {
        for label in [
            "<script>alert(1)</script>",
            "\"/><foo",
            "a & b 'c'",
            "]]><!--",
        ] {
            let badge = BadgeOptions {
                label: label.to_owned(),
                ..BadgeOptions::default()
            };
            for style in Style::ALL {
                let svg = render(
                    &BadgeOptions {
                        style,
                        ..badge.clone()
                    },
                    1,
                );
                let (_, texts) = parsed(&svg);
                let expected = if style == Style::ForTheBadge {
                    label.to_uppercase()
                } else {
                    label.to_owned()
                };
                assert_eq!(texts, [expected, "1".to_owned()], "{svg}");
                assert_eq!(title(&svg), format!("{label}: 1"));
                assert!(!svg.contains("<script") && !svg.contains("<foo"), "{svg}");
            }
        }
    }

    #[test]
    fn empty_label_shows_the_count_alone() {
        let svg = render(
            &BadgeOptions {
                label: String::new(),
                ..BadgeOptions::default()
            },
            1_234_567,
        );
        let (width, texts) = parsed(&svg);
        assert_eq!(texts, ["1.2M"]);
        assert_eq!(title(&svg), "1,234,567");
        let with_label = parsed(&render(&BadgeOptions::default(), 1_234_567)).0;
        assert!(width < with_label, "{width} < {with_label}");
    }

    #[test]
    fn widths_grow_with_the_text() {
        let width = |label: &str, count: u64, style: Style| {
            let options = BadgeOptions {
                label: label.to_owned(),
                style,
                ..BadgeOptions::default()
            };
            parsed(&render(&options, count)).0
        };
        for style in Style::ALL {
            assert!(width("hits", 1, style) < width("page views", 1, style));
            assert!(width("hits", 1, style) < width("hits", 123, style));
            assert!(
                width("iii", 1, style) < width("WWW", 1, style),
                "proportional"
            );
            assert!(width("hits", 1, style) < width("日本語", 1, style));
        }
        assert!(width("hits", 1, Style::Flat) < width("hits", 1, Style::ForTheBadge));
        // shields draws the default "hits | 12.3k" flat badge 74 pixels wide.
        let flat = width("hits", 12_345, Style::Flat);
        assert!((70.0..=80.0).contains(&flat), "{flat}");
    }

    #[test]
    fn styles_differ_in_shape() {
        let svg = |style| {
            render(
                &BadgeOptions {
                    style,
                    ..BadgeOptions::default()
                },
                5,
            )
        };
        let flat = svg(Style::Flat);
        assert!(flat.contains(r#"height="20""#) && flat.contains(r#"rx="3""#));
        assert!(flat.contains("linearGradient") && flat.contains(r#"fill-opacity=".3""#));
        let square = svg(Style::FlatSquare);
        assert!(square.contains(r#"rx="0""#) && !square.contains("linearGradient"));
        assert!(!square.contains("aria-hidden"), "no text shadow");
        let plastic = svg(Style::Plastic);
        assert!(plastic.contains(r#"height="18""#) && plastic.contains(r#"stop-opacity=".7""#));
        let badge = svg(Style::ForTheBadge);
        assert!(badge.contains(r#"height="28""#) && badge.contains(r#"rx="0""#));
        assert_eq!(parsed(&badge).1, ["HITS", "5"]);
    }

    #[test]
    fn dark_text_on_light_backgrounds() {
        let svg = |color: &str| {
            render(
                &options(&format!("color={color}&style=flat-square")).unwrap(),
                5,
            )
        };
        let fills = |svg: &str| {
            let doc = roxmltree::Document::parse(svg).unwrap();
            doc.descendants()
                .filter(|n| n.has_tag_name("text"))
                .map(|n| n.attribute("fill").unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(fills(&svg("blue")), ["#fff", "#fff"]);
        assert_eq!(fills(&svg("fff")), ["#fff", "#333"], "label stays on grey");
        assert_eq!(fills(&svg("eee")), ["#fff", "#333"]);
        assert_eq!(fills(&svg("yellow")), ["#fff", "#fff"], "as on shields");
        assert!(Color::rgb(255, 255, 255).is_light());
        assert!(!Color::rgb(0, 0, 0).is_light());
    }

    #[test]
    fn abbreviations_are_cut_never_rounded_up() {
        for (count, shown) in [
            (0, "0"),
            (999, "999"),
            (1000, "1k"),
            (1049, "1k"),
            (1050, "1k"),
            (1100, "1.1k"),
            (12_345, "12.3k"),
            (99_999, "99.9k"),
            (100_000, "100k"),
            (999_499, "999k"),
            (999_999, "999k"),
            (1_000_000, "1M"),
            (1_049_999, "1M"),
            (12_345_678, "12.3M"),
            (999_999_999, "999M"),
            (1_000_000_000, "1B"),
            (2_500_000_000_000, "2.5T"),
            (1_000_000_000_000_000, "1Q"),
            (u64::MAX, "18446Q"),
        ] {
            assert_eq!(abbreviate(count), shown, "{count}");
        }
        let title = title(&render(&BadgeOptions::default(), u64::MAX));
        assert_eq!(title, "hits: 18,446,744,073,709,551,615");
    }
}
