//! `/badge/<key>.svg`: a counter drawn as a shields.io badge ("hits | 12.3k"),
//! the hit counter people put on a README or a page.
//!
//! The drawing is the `shields` crate's, which renders what shields.io renders for
//! the same parameters, byte for byte, so the badge matches the ones it sits next
//! to. What is ours: the query, parsed strictly into [`BadgeOptions`] so that only
//! checked values reach the renderer (which escapes every text it writes); the
//! count, cut short on the badge; and the exact count in the badge's accessible
//! name.

use shields::{BadgeParams, BadgeStyle, RenderOptions};

use crate::markup::{escape, thousands};
use crate::query::{QueryError, shorten};

/// One option of the badge query: the name shields.io gives it and the older
/// names this counter took before, which keep working so that no badge already
/// in a README breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameter {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
}

impl Parameter {
    const fn new(name: &'static str) -> Self {
        Self { name, aliases: &[] }
    }

    const fn alias(name: &'static str, aliases: &'static [&'static str]) -> Self {
        Self { name, aliases }
    }

    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

const LABEL: Parameter = Parameter::new("label");
const COLOR: Parameter = Parameter::new("color");
const LABEL_COLOR: Parameter = Parameter::alias("labelColor", &["label_color"]);
const STYLE: Parameter = Parameter::new("style");
const LOGO: Parameter = Parameter::new("logo");
const LOGO_COLOR: Parameter = Parameter::alias("logoColor", &["logo_color"]);
const LOGO_SIZE: Parameter = Parameter::alias("logoSize", &["logo_size"]);
const LINK: Parameter = Parameter::new("link");
const CACHE_SECONDS: Parameter = Parameter::alias("cacheSeconds", &["cache_seconds"]);
const COUNT: Parameter = Parameter::new("count");

/// The query parameters a badge takes, in shields.io's spelling, each with the
/// names it also answers to.
pub const PARAMETERS: [Parameter; 10] = [
    LABEL,
    COLOR,
    LABEL_COLOR,
    STYLE,
    LOGO,
    LOGO_COLOR,
    LOGO_SIZE,
    LINK,
    CACHE_SECONDS,
    COUNT,
];

/// The value of `parameter`, under whichever of its names it was given.
///
/// Given twice, even once under each name, it is refused: either guess would
/// hide a mistake in a hand-written URL.
pub fn option(
    pairs: &[(String, String)],
    parameter: Parameter,
) -> Result<Option<&str>, BadgeError> {
    let mut given = pairs.iter().filter(|(name, _)| parameter.answers_to(name));
    let first = given.next();
    if let Some((second, _)) = given.next() {
        let (first, _) = first.expect("a second comes after a first");
        return Err(if first == second {
            QueryError::Repeated(shorten(first)).into()
        } else {
            BadgeError::SameOption {
                first: first.clone(),
                second: second.clone(),
            }
        });
    }
    Ok(first.map(|(_, value)| value.as_str()))
}

/// Refuses the first parameter none of `parameters` answers to, naming every one
/// that is allowed, aliases included.
pub fn reject_unknown(
    pairs: &[(String, String)],
    parameters: &[Parameter],
) -> Result<(), QueryError> {
    let Some((name, _)) = pairs
        .iter()
        .find(|(name, _)| !parameters.iter().any(|p| p.answers_to(name)))
    else {
        return Ok(());
    };
    let allowed = parameters
        .iter()
        .map(|p| match p.aliases {
            [] => p.name.to_owned(),
            aliases => format!("{} (or {})", p.name, aliases.join(", ")),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(QueryError::Unknown {
        name: shorten(name),
        allowed: format!("the parameters allowed here are {allowed}"),
    })
}

/// Why a badge query was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadgeError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(
        "{first} and {second} are two spellings of the same option (shields.io's and the \
         older one); give it once"
    )]
    SameOption { first: String, second: String },
    #[error(
        "the label is {0} characters long; at most {max} are allowed",
        max = BadgeOptions::MAX_LABEL_CHARS
    )]
    LabelTooLong(usize),
    #[error("the label must not contain control characters (found U+{0:04X})")]
    LabelControl(u32),
    #[error(
        "{parameter}={value:?} is not a color: use a CSS color as shields.io takes it: one of \
         its names ({names}), a CSS color name such as white, black or silver, hex of 3, 4, 6 \
         or 8 digits such as 4c1 or 007ec6 (a leading # written %23), or rgb(), rgba(), hsl() \
         or hsla() such as rgb(0,128,255) or hsl(120,100%,25%)",
        names = SHIELDS_COLOR_NAMES.join(", ")
    )]
    Color { parameter: String, value: String },
    #[error(
        "style={0:?} is not a badge style: use {styles}",
        styles = BadgeStyle::ALL.map(BadgeStyle::as_str).join(", ")
    )]
    Style(String),
    #[cfg(feature = "logos")]
    #[error(
        "logo={0:?} is not a Simple Icons slug: use an icon's slug from simpleicons.org, \
         lowercase letters and digits such as github, rust or docker"
    )]
    Logo(String),
    #[cfg(not(feature = "logos"))]
    #[error(
        "logo={0:?} cannot be drawn: this counter was built without Simple Icons \
         (the web component's cargo feature `logos`)"
    )]
    Logo(String),
    #[error("{parameter}={value:?} is not a logo size: the only size shields.io takes is auto")]
    LogoSize { parameter: String, value: String },
    #[error(
        "link={0:?} is not a web address: give an absolute http:// or https:// URL of at most \
         {max} characters, such as https://github.com/owner/repo, its & written %26 and \
         its # %23 in the badge's URL",
        max = Link::MAX_CHARS
    )]
    Link(String),
    #[error(
        "{parameter}={value:?} is not a number of seconds: give a whole number such as 3600 \
         (below {floor} counts as {floor}, shields.io's shortest; above {ceiling}, a year, \
         as a year)",
        floor = CacheSeconds::FLOOR,
        ceiling = CacheSeconds::CEILING
    )]
    CacheSeconds { parameter: String, value: String },
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
    /// The count's background. Left out, it is shields' blue ("informational"):
    /// a count is information rather than a pass or a failure.
    pub color: Option<Color>,
    /// The label's background, shields' grey when left out. Given, it also draws
    /// the label's box when the label is empty, as shields.io does.
    pub label_color: Option<Color>,
    pub style: BadgeStyle,
    /// An icon drawn before the label.
    pub logo: Option<Logo>,
    /// The logo's color; shields picks one that suits the style when left out.
    pub logo_color: Option<Color>,
    /// The logo's width in pixels, when a form other than shields.io's asks for
    /// one (HITS' `logoWidth`); the renderer's 14 otherwise.
    pub logo_width: Option<u32>,
    /// Where the badge leads when clicked. Only a badge opened on its own or
    /// embedded with `<object>` can be clicked: an `<img>` is never a link.
    pub link: Option<Link>,
    /// How long caches may keep the badge; `None`, the default, forbids it, so
    /// that every view counts.
    pub cache: Option<CacheSeconds>,
    /// Whether this request is a hit. `false` shows the current count without
    /// adding to it: for previews, such as the one on the counter's stats page.
    pub count: bool,
}

impl BadgeOptions {
    pub const MAX_LABEL_CHARS: usize = 64;

    /// The options a badge query asks for; anything not given keeps its default.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, BadgeError> {
        reject_unknown(pairs, &PARAMETERS)?;
        let mut options = Self::default();
        if let Some(label) = option(pairs, LABEL)? {
            options.label = parse_label(label)?;
        }
        options.color = color(pairs, COLOR)?;
        options.label_color = color(pairs, LABEL_COLOR)?;
        options.logo_color = color(pairs, LOGO_COLOR)?;
        if let Some(style) = option(pairs, STYLE)? {
            options.style = parse_style(style)?;
        }
        options.logo = option(pairs, LOGO)?.map(Logo::parse).transpose()?;
        if let Some(size) = named(pairs, LOGO_SIZE)? {
            LogoSize::parse(size)?;
        }
        options.link = option(pairs, LINK)?.map(Link::parse).transpose()?;
        options.cache = named(pairs, CACHE_SECONDS)?
            .map(CacheSeconds::parse)
            .transpose()?;
        if let Some(count) = option(pairs, COUNT)? {
            options.count = parse_count(count)?;
        }
        Ok(options)
    }
}

/// The value of `parameter` with the name it was given under, for messages that
/// quote the URL back as the person wrote it.
fn named(
    pairs: &[(String, String)],
    parameter: Parameter,
) -> Result<Option<(&str, &str)>, BadgeError> {
    let value = option(pairs, parameter)?;
    Ok(value.map(|value| {
        let name = pairs
            .iter()
            .find(|(name, _)| parameter.answers_to(name))
            .map_or(parameter.name, |(name, _)| name.as_str());
        (name, value)
    }))
}

/// The color `parameter` names, if given.
pub fn color(
    pairs: &[(String, String)],
    parameter: Parameter,
) -> Result<Option<Color>, BadgeError> {
    named(pairs, parameter)?
        .map(|(name, text)| Color::parse(name, text))
        .transpose()
}

pub fn parse_style(style: &str) -> Result<BadgeStyle, BadgeError> {
    style.parse().map_err(|_| BadgeError::Style(shorten(style)))
}

pub fn parse_count(count: &str) -> Result<bool, BadgeError> {
    match count {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(BadgeError::Count(shorten(other))),
    }
}

impl Default for BadgeOptions {
    fn default() -> Self {
        Self {
            label: "hits".to_owned(),
            color: None,
            label_color: None,
            style: BadgeStyle::Flat,
            logo: None,
            logo_color: None,
            logo_width: None,
            link: None,
            cache: None,
            count: true,
        }
    }
}

pub fn parse_label(label: &str) -> Result<String, BadgeError> {
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

/// A color shields.io takes, in the form the renderer is given it: one of
/// shields.io's names (`brightgreen`), `#` and hex digits (`#4c1`), a CSS color
/// name (`white`), or an `rgb()`/`rgba()`/`hsl()`/`hsla()` function, lowercase.
///
/// The renderer (the `shields` crate) maps the names to shields.io's hex and
/// writes the rest into the SVG as it is, as shields.io does; but for text it
/// cannot read it silently draws its default, which would hide a typo, and its
/// CSS parser takes more than shields.io does (`rgb(-100,20,111)`, `hwb()`,
/// `lab()`), which would draw a badge shields.io draws otherwise. So only
/// what shields.io's renderer (badge-maker, through css-color-converter) takes
/// gets here, and no other query text reaches the SVG as a color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Color(String);

impl Color {
    pub fn parse(parameter: &str, text: &str) -> Result<Self, BadgeError> {
        let refuse = || BadgeError::Color {
            parameter: shorten(parameter),
            value: shorten(text),
        };
        // Names and function names are case-insensitive in CSS; shields.io only
        // knows them in lowercase and draws its default for `White`, which is
        // surely not what the author meant.
        let lower = text.to_ascii_lowercase();
        if SHIELDS_COLOR_NAMES.contains(&lower.as_str()) || is_css_color_name(&lower) {
            return Ok(Self(lower));
        }
        // shields.io takes 3 and 6 digits bare and 3, 4, 6 and 8 after `#`; the
        // bare 4 and 8 it ignores are taken too, since nothing else is meant by them.
        let hex = lower.strip_prefix('#').unwrap_or(&lower);
        if matches!(hex.len(), 3 | 4 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self(format!("#{hex}")));
        }
        if is_css_color_function(&lower) && csscolorparser::parse(&lower).is_ok() {
            return Ok(Self(lower));
        }
        Err(refuse())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// shields.io's 9 named colors and its 7 aliases for them.
const SHIELDS_COLOR_NAMES: [&str; 16] = [
    "brightgreen",
    "green",
    "yellowgreen",
    "yellow",
    "orange",
    "red",
    "blue",
    "lightgrey",
    "grey",
    "gray",
    "lightgray",
    "success",
    "important",
    "critical",
    "informational",
    "inactive",
];

/// One of CSS's named colors, from the list of the parser the renderer uses:
/// the same 148 names as the `color-name` package shields.io's parser reads
/// (`transparent`, a keyword rather than a name, is in neither).
fn is_css_color_name(text: &str) -> bool {
    csscolorparser::NAMED_COLORS
        .keys()
        .any(|name| name.as_str() == text)
}

/// Whether `text` is an `rgb()`, `rgba()`, `hsl()` or `hsla()` color written as
/// shields.io's parser (css-color-converter 2) reads one: whole numbers, either
/// all plain or all percentages for rgb, percentages for saturation and
/// lightness, an alpha of `0`, `1`, `.5` or `50%`; commas between, or spaces
/// with `/` before the alpha.
fn is_css_color_function(text: &str) -> bool {
    let Some((function, rest)) = text.split_once('(') else {
        return false;
    };
    let Some(arguments) = rest.strip_suffix(')') else {
        return false;
    };
    let (channels, alpha): (Vec<&str>, Option<&str>) = if arguments.contains(',') {
        let mut parts: Vec<&str> = arguments.split(',').map(str::trim).collect();
        let alpha = (parts.len() == 4).then(|| parts.pop()).flatten();
        (parts, alpha)
    } else {
        let (channels, alpha) = match arguments.split_once('/') {
            Some((channels, alpha)) => (channels, Some(alpha.trim())),
            None => (arguments, None),
        };
        (channels.split_whitespace().collect(), alpha)
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let percent = |s: &str| s.strip_suffix('%').is_some_and(digits);
    let alpha_ok = alpha.is_none_or(|a| {
        a == "0"
            || a == "1"
            || percent(a)
            || a.strip_prefix("0")
                .unwrap_or(a)
                .strip_prefix('.')
                .is_some_and(digits)
    });
    let hue = |s: &str| {
        let number = ["deg", "grad", "rad", "turn"]
            .iter()
            .find_map(|unit| s.strip_suffix(unit))
            .unwrap_or(s);
        digits(number)
            || number
                .strip_prefix("0")
                .unwrap_or(number)
                .strip_prefix('.')
                .is_some_and(digits)
    };
    let [first, second, third] = channels[..] else {
        return false;
    };
    alpha_ok
        && match function {
            "rgb" | "rgba" => {
                [first, second, third].into_iter().all(digits)
                    || [first, second, third].into_iter().all(percent)
            }
            "hsl" | "hsla" => hue(first) && percent(second) && percent(third),
            _ => false,
        }
}

/// `logoSize`: shields.io takes `auto`, which widens the logo to its icon's shape.
/// Taken so that a pasted URL works; the renderer has no such sizing, so the logo
/// keeps the standard 14 pixels.
struct LogoSize;

impl LogoSize {
    fn parse((parameter, text): (&str, &str)) -> Result<Self, BadgeError> {
        if text == "auto" {
            Ok(Self)
        } else {
            Err(BadgeError::LogoSize {
                parameter: shorten(parameter),
                value: shorten(text),
            })
        }
    }
}

/// How long a cache may keep a badge, `cacheSeconds` as shields.io takes it: a
/// whole number of seconds, no shorter than shields.io's shortest (its
/// `defaultCacheLengthSeconds`, 120: shorter asks are raised to it) and, since
/// shields.io sets no ceiling, no longer than a year, the longest an `Expires`
/// date may look ahead in HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSeconds(u32);

impl CacheSeconds {
    pub const FLOOR: u32 = 120;
    pub const CEILING: u32 = 31_536_000;

    fn parse((parameter, text): (&str, &str)) -> Result<Self, BadgeError> {
        let refuse = || BadgeError::CacheSeconds {
            parameter: shorten(parameter),
            value: shorten(text),
        };
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse());
        }
        // All digits: only a number too large for u64 fails, and that is past the ceiling.
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
        let seconds = seconds.clamp(Self::FLOOR.into(), Self::CEILING.into());
        Ok(Self(u32::try_from(seconds).expect("clamped to a year")))
    }

    pub fn seconds(self) -> u32 {
        self.0
    }
}

/// The slug of a Simple Icons icon this build carries (`github`, `rust`).
///
/// Only a slug is taken: the renderer would also embed raw SVG given here, and
/// an unknown name would silently draw no logo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo(String);

impl Logo {
    #[cfg(feature = "logos")]
    pub fn parse(text: &str) -> Result<Self, BadgeError> {
        let slug = text.to_ascii_lowercase();
        // Longer than any slug (the longest has 28 characters), but short enough
        // that nothing long is looked up.
        let is_slug = (1..=64).contains(&slug.len())
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if is_slug && simpleicons::Icon::get_svg(&slug).is_some() {
            Ok(Self(slug))
        } else {
            Err(BadgeError::Logo(shorten(text)))
        }
    }

    #[cfg(not(feature = "logos"))]
    pub fn parse(text: &str) -> Result<Self, BadgeError> {
        Err(BadgeError::Logo(shorten(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute `http` or `https` URL, as given.
///
/// Other schemes are refused rather than dropped: the renderer leaves out a
/// `javascript:` link silently, which would hide the mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link(String);

impl Link {
    const MAX_CHARS: usize = 2000;

    pub fn parse(text: &str) -> Result<Self, BadgeError> {
        let refuse = || BadgeError::Link(shorten(text));
        if text.len() > Self::MAX_CHARS {
            return Err(refuse());
        }
        // http's parser refuses spaces, quotes, `<`, `>` and non-ASCII.
        let uri: http::Uri = text.parse().map_err(|_| refuse())?;
        let web = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty());
        if web {
            Ok(Self(text.to_owned()))
        } else {
            Err(refuse())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A complete SVG document: the label and the count, abbreviated (`12.3k`); its
/// title and accessible name carry the exact count (`hits: 12,345`).
pub fn render(options: &BadgeOptions, count: u64) -> String {
    render_message(
        options,
        &abbreviate(count),
        &accessible_name(&options.label, &thousands(count)),
    )
}

/// A badge showing `message`, named `name` (its title and accessible name).
pub fn render_message(options: &BadgeOptions, message: &str, name: &str) -> String {
    let params = BadgeParams {
        style: options.style,
        label: Some(&options.label),
        message: Some(message),
        label_color: options.label_color.as_ref().map(Color::as_str),
        message_color: options.color.as_ref().map(Color::as_str),
        link: options.link.as_ref().map(Link::as_str),
        extra_link: None,
        logo: options.logo.as_ref().map(Logo::as_str),
        logo_color: options.logo_color.as_ref().map(Color::as_str),
    };
    let svg = match options.logo_width {
        Some(width) => {
            shields::render_badge_svg_with(&params, &RenderOptions::default().logo_width(width))
        }
        None => shields::render_badge_svg(&params),
    };
    with_accessible_name(svg, name)
}

/// `hits: 12,345`, or `12,345` without a label: the label as given (not in the
/// capitals some styles draw it in) and the count to the last digit.
pub fn accessible_name(label: &str, count: &str) -> String {
    if label.is_empty() {
        count.to_owned()
    } else {
        format!("{label}: {count}")
    }
}

/// shields names a badge by the text it shows (`hits: 12.3k`), in its `aria-label`
/// and `<title>` (the tooltip). Ours says the exact count there, which the
/// abbreviation hides.
///
/// shields writes both at the top of the document, right after the size, with
/// the label escaped, so the first `</title>` is its own.
fn with_accessible_name(mut svg: String, name: &str) -> String {
    const START: &str = r#" role="img" aria-label=""#;
    const END: &str = "</title>";
    let Some(start) = svg.find(START) else {
        return svg;
    };
    let Some(end) = svg[start..].find(END).map(|i| start + i + END.len()) else {
        return svg;
    };
    let name = escape(name);
    svg.replace_range(
        start..end,
        &format!(r#"{START}{name}"><title>{name}</title>"#),
    );
    svg
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::query;

    use super::*;

    fn options(query: &str) -> Result<BadgeOptions, BadgeError> {
        BadgeOptions::from_query(&query::parse(query)?)
    }

    fn document(svg: &str) -> roxmltree::Document<'_> {
        let doc = roxmltree::Document::parse(svg)
            .unwrap_or_else(|e| panic!("the badge is well-formed XML: {e}: {svg}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        assert_eq!(root.attribute("role"), Some("img"));
        doc
    }

    /// Every text the badge draws (a text and its shadow count once).
    fn texts(svg: &str) -> BTreeSet<String> {
        document(svg)
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or_default().to_owned())
            .collect()
    }

    /// The badge's title, which must also be its `aria-label`.
    fn title(svg: &str) -> String {
        let doc = document(svg);
        let title = doc
            .descendants()
            .find(|n| n.has_tag_name("title"))
            .and_then(|n| n.text())
            .unwrap()
            .to_owned();
        assert_eq!(doc.root_element().attribute("aria-label"), Some(&*title));
        title
    }

    fn styles() -> impl Iterator<Item = (&'static str, BadgeStyle)> {
        BadgeStyle::ALL.into_iter().map(|s| (s.as_str(), s))
    }

    #[test]
    fn defaults() {
        let defaults = options("").unwrap();
        assert_eq!(defaults, BadgeOptions::default());
        assert_eq!(defaults.label, "hits");
        assert_eq!(defaults.style, BadgeStyle::Flat);
        assert_eq!(defaults.color, None, "shields' blue");
        assert_eq!(defaults.label_color, None, "shields' grey");
        assert_eq!(
            (defaults.logo, defaults.logo_color, defaults.link),
            (None, None, None)
        );
        assert!(defaults.count);
    }

    #[test]
    fn parses_every_parameter() {
        let parsed = options(
            "label=page+views&color=orange&label_color=%23ABC&style=for-the-badge\
             &logo_color=4c1&link=https%3A%2F%2Fexample.com%2Fa%3Fb%3D1%26c%3D2&count=false",
        )
        .unwrap();
        assert_eq!(
            parsed,
            BadgeOptions {
                label: "page views".to_owned(),
                color: Some(Color("orange".to_owned())),
                label_color: Some(Color("#abc".to_owned())),
                style: BadgeStyle::ForTheBadge,
                logo: None,
                logo_color: Some(Color("#4c1".to_owned())),
                logo_width: None,
                link: Some(Link("https://example.com/a?b=1&c=2".to_owned())),
                cache: None,
                count: false,
            }
        );
        // shields.io's spelling, the primary one.
        let camel =
            options("labelColor=%23ABC&logoColor=4c1&logoSize=auto&cacheSeconds=3600&color=white")
                .unwrap();
        assert_eq!(camel.label_color, Some(Color("#abc".to_owned())));
        assert_eq!(camel.logo_color, Some(Color("#4c1".to_owned())));
        assert_eq!(camel.cache, Some(CacheSeconds(3600)));
        assert_eq!(camel.color, Some(Color("white".to_owned())));
        let snake = options(
            "label_color=%23ABC&logo_color=4c1&logo_size=auto&cache_seconds=3600&color=white",
        )
        .unwrap();
        assert_eq!(snake, camel, "the older names are aliases");
        assert!(!options("count=0").unwrap().count);
        assert!(options("count=1").unwrap().count);
        assert!(options("count=true").unwrap().count);
        assert_eq!(options("label=++").unwrap().label, "", "trimmed");
        assert_eq!(options("label=").unwrap().label, "");
        let label = "é".repeat(64);
        assert_eq!(options(&format!("label={label}")).unwrap().label, label);
        for (name, style) in styles() {
            assert_eq!(options(&format!("style={name}")).unwrap().style, style);
        }
        assert_eq!(
            styles().map(|(name, _)| name).collect::<Vec<_>>(),
            ["flat", "flat-square", "plastic", "social", "for-the-badge"]
        );
        for link in ["http://localhost:3000/x", "https://github.com/o/r#readme"] {
            let parsed = options(&format!("link={}", link.replace('#', "%23"))).unwrap();
            assert_eq!(parsed.link.unwrap().as_str(), link);
        }
    }

    #[cfg(feature = "logos")]
    #[test]
    fn logos_are_simple_icons_slugs() {
        let logo = |text: &str| Logo::parse(text).map(|logo| logo.as_str().to_owned());
        assert_eq!(logo("github"), Ok("github".to_owned()));
        assert_eq!(logo("GitHub"), Ok("github".to_owned()));
        assert_eq!(logo("nodedotjs"), Ok("nodedotjs".to_owned()));
        for bad in [
            "",
            "nosuchicon",
            "node.js",
            "git hub",
            "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            "../github",
        ] {
            assert_eq!(logo(bad), Err(BadgeError::Logo(shorten(bad))), "{bad:?}");
        }
    }

    #[cfg(not(feature = "logos"))]
    #[test]
    fn logos_are_refused_without_simple_icons() {
        let message = options("logo=github").unwrap_err().to_string();
        assert!(message.contains("built without Simple Icons"), "{message}");
        assert!(message.contains("`logos`"), "{message}");
    }

    // The table of shields.io's colors, shared with the end-to-end suite.
    include!("shields_io_colors.rs");

    /// The count's background in a flat badge: its second rectangle's fill.
    fn message_fill(svg: &str) -> String {
        document(svg)
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter(|n| n.parent().is_none_or(|p| !p.has_tag_name("clipPath")))
            .nth(1)
            .and_then(|rect| rect.attribute("fill"))
            .unwrap_or_else(|| panic!("a flat badge has a message rectangle: {svg}"))
            .to_owned()
    }

    #[test]
    fn colors_render_what_shields_io_renders() {
        let default = message_fill(&render(&BadgeOptions::default(), 1));
        assert_eq!(default, "#007ec6");
        for &(text, shields_io, ours) in SHIELDS_IO_COLORS {
            let query = format!(
                "color={}",
                text.replace('%', "%25")
                    .replace('#', "%23")
                    .replace(' ', "%20")
            );
            let parsed = options(&query);
            match ours {
                Some(fill) => {
                    let parsed = parsed.unwrap_or_else(|e| panic!("{text:?}: {e}"));
                    assert_eq!(message_fill(&render(&parsed, 1)), fill, "{text:?}");
                }
                None => assert!(
                    matches!(parsed, Err(BadgeError::Color { .. })),
                    "{text:?} is refused as a color: {parsed:?}"
                ),
            }
            // Where shields.io takes it, the renderer given shields.io's own
            // spelling draws what shields.io draws (but for the padded name it
            // trims): the color is the renderer's to draw, not ours.
            if let Some(fill) = shields_io.filter(|_| text.trim() == text) {
                let svg = shields::render_badge_svg(&BadgeParams {
                    message_color: Some(text),
                    ..BadgeParams::new("hits", "1")
                });
                assert_eq!(message_fill(&svg), fill, "{text:?}");
            }
        }
    }

    #[test]
    fn every_color_option_takes_every_color() {
        for parameter in [
            "color",
            "labelColor",
            "label_color",
            "logoColor",
            "logo_color",
        ] {
            for value in [
                "white",
                "rgb(0,128,255)",
                "hsl(120,100%,25%)",
                "lightgrey",
                "%23fffe",
            ] {
                assert!(
                    options(&format!("{parameter}={value}")).is_ok(),
                    "{parameter}={value}"
                );
            }
            let message = options(&format!("{parameter}=nope"))
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!("{parameter}=\"nope\" is not a color")),
                "{message}"
            );
        }
        let svg = render(&options("labelColor=white&color=black").unwrap(), 1);
        let fills: Vec<String> = document(&svg)
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter(|n| n.parent().is_none_or(|p| !p.has_tag_name("clipPath")))
            .filter_map(|n| n.attribute("fill").map(str::to_owned))
            .collect();
        assert_eq!(fills[..2], ["white", "black"], "{svg}");
    }

    #[test]
    fn cache_seconds_stay_within_shields_io_floor_and_a_year() {
        let cache = |query: &str| options(query).map(|o| o.cache.map(CacheSeconds::seconds));
        assert_eq!(cache(""), Ok(None));
        assert_eq!(cache("cacheSeconds=0"), Ok(Some(120)));
        assert_eq!(cache("cacheSeconds=119"), Ok(Some(120)));
        assert_eq!(cache("cacheSeconds=120"), Ok(Some(120)));
        assert_eq!(cache("cacheSeconds=3600"), Ok(Some(3600)));
        assert_eq!(cache("cache_seconds=86400"), Ok(Some(86400)));
        assert_eq!(cache("cacheSeconds=31536000"), Ok(Some(31_536_000)));
        assert_eq!(
            cache("cacheSeconds=99999999999999999999999"),
            Ok(Some(31_536_000))
        );
        for bad in ["", "-1", "1.5", "1e3", "+60", "an hour", "%2060"] {
            let message = options(&format!("cacheSeconds={bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains("is not a number of seconds"),
                "{bad:?}: {message}"
            );
        }
    }

    #[test]
    fn bad_queries_say_what_is_allowed() {
        let message = |query: &str| options(query).unwrap_err().to_string();
        assert_eq!(
            message("colour=red"),
            "unknown parameter \"colour\"; the parameters allowed here are label, color, \
             labelColor (or label_color), style, logo, logoColor (or logo_color), logoSize \
             (or logo_size), link, cacheSeconds (or cache_seconds), count"
        );
        assert_eq!(
            message("labelColor=red&label_color=blue"),
            "labelColor and label_color are two spellings of the same option (shields.io's and \
             the older one); give it once"
        );
        assert_eq!(
            message("logoSize=large"),
            "logoSize=\"large\" is not a logo size: the only size shields.io takes is auto"
        );
        assert_eq!(
            message("cacheSeconds=soon"),
            "cacheSeconds=\"soon\" is not a number of seconds: give a whole number such as 3600 \
             (below 120 counts as 120, shields.io's shortest; above 31536000, a year, as a year)"
        );
        assert_eq!(
            message("style=flat&style=plastic"),
            "the parameter \"style\" is given more than once; give it once"
        );
        for parameter in PARAMETERS
            .iter()
            .flat_map(|p| std::iter::once(p.name).chain(p.aliases.iter().copied()))
        {
            assert!(
                message(&format!("{parameter}=1&{parameter}=1")).contains("more than once"),
                "{parameter}"
            );
        }
        assert_eq!(
            message(&format!("label={}", "x".repeat(65))),
            "the label is 65 characters long; at most 64 are allowed"
        );
        assert_eq!(
            message("label=a%0Ab"),
            "the label must not contain control characters (found U+000A)"
        );
        assert_eq!(
            message("color=purple-ish"),
            "color=\"purple-ish\" is not a color: use a CSS color as shields.io takes it: one of \
             its names (brightgreen, green, yellowgreen, yellow, orange, red, blue, lightgrey, \
             grey, gray, lightgray, success, important, critical, informational, inactive), a \
             CSS color name such as white, black or silver, hex of 3, 4, 6 or 8 digits such as \
             4c1 or 007ec6 (a leading # written %23), or rgb(), rgba(), hsl() or hsla() such as \
             rgb(0,128,255) or hsl(120,100%,25%)"
        );
        assert!(
            message("label_color=%3Cscript%3E")
                .starts_with("label_color=\"<script>\" is not a color")
        );
        assert!(message("logo_color=nope").starts_with("logo_color=\"nope\" is not a color"));
        assert_eq!(
            message("style=3d"),
            "style=\"3d\" is not a badge style: use flat, flat-square, plastic, social, \
             for-the-badge"
        );
        assert_eq!(
            message("count=yes"),
            "count=\"yes\" is not true or false: count=true (or 1, the default) counts this view \
             as a hit, count=false (or 0) shows the counter without counting"
        );
        #[cfg(feature = "logos")]
        assert_eq!(
            message("logo=nosuchicon"),
            "logo=\"nosuchicon\" is not a Simple Icons slug: use an icon's slug from \
             simpleicons.org, lowercase letters and digits such as github, rust or docker"
        );
        assert_eq!(
            message("link=javascript:alert(1)"),
            "link=\"javascript:alert(1)\" is not a web address: give an absolute http:// or \
             https:// URL of at most 2000 characters, such as https://github.com/owner/repo, \
             its & written %26 and its # %23 in the badge's URL"
        );
        for link in [
            "",
            "JavaScript:alert(1)",
            "data:text/html,<script>x</script>",
            "ftp://example.com/",
            "/relative/path",
            "example.com",
            "https://",
            "https:///path",
            "https://exa mple.com/",
            "https://example.com/\"><script>",
            "https://exämple.com/",
        ] {
            let query = format!("link={}", link.replace('%', "%25").replace('&', "%26"));
            assert!(
                message(&query).contains("is not a web address"),
                "{link:?}: {}",
                message(&query)
            );
        }
        let long = format!("link=https://example.com/{}", "a".repeat(2000));
        assert!(message(&long).contains("at most 2000"));
        for parameter in ["color", "label", "logo", "link"] {
            let long = message(&format!("{parameter}={}", "z".repeat(5000)));
            assert!(long.len() < 600, "echoes too much: {long}");
        }
    }

    /// What the `shields` crate draws for `params`, with its accessible name (the
    /// text shown, such as `hits: 12.3k`) replaced by ours (`hits: 12,345`): what
    /// our badge must be, byte for byte.
    fn crate_badge(params: BadgeParams, shown_name: &str, our_name: &str) -> String {
        let svg = shields::render_badge_svg(&params);
        let named = |name: &str| format!(r#"aria-label="{name}"><title>{name}</title>"#);
        assert_eq!(svg.matches(&named(shown_name)).count(), 1, "{svg}");
        svg.replace(&named(shown_name), &named(our_name))
    }

    #[test]
    fn draws_what_the_shields_crate_draws() {
        let hits = |message| BadgeParams::new("hits", message);
        let cases: Vec<(&str, u64, BadgeParams, &str, &str)> = vec![
            ("", 12_345, hits("12.3k"), "hits: 12.3k", "hits: 12,345"),
            (
                "style=flat-square&color=brightgreen",
                5,
                BadgeParams {
                    style: BadgeStyle::FlatSquare,
                    message_color: Some("brightgreen"),
                    ..hits("5")
                },
                "hits: 5",
                "hits: 5",
            ),
            (
                "style=plastic&label=page+views&label_color=%23ABC&color=FE7D37",
                999_999,
                BadgeParams {
                    style: BadgeStyle::Plastic,
                    label_color: Some("#abc"),
                    message_color: Some("#fe7d37"),
                    ..BadgeParams::new("page views", "999k")
                },
                "page views: 999k",
                "page views: 999,999",
            ),
            (
                "style=for-the-badge&label=visitors&color=critical",
                1_234_567,
                BadgeParams {
                    style: BadgeStyle::ForTheBadge,
                    message_color: Some("critical"),
                    ..BadgeParams::new("visitors", "1.2M")
                },
                "VISITORS: 1.2M",
                "visitors: 1,234,567",
            ),
            (
                "style=social&label=views",
                1_000,
                BadgeParams {
                    style: BadgeStyle::Social,
                    ..BadgeParams::new("views", "1k")
                },
                "Views: 1k",
                "views: 1,000",
            ),
            (
                "label=&color=yellow",
                7,
                BadgeParams {
                    message_color: Some("yellow"),
                    ..BadgeParams::new("", "7")
                },
                "7",
                "7",
            ),
            (
                "label=&label_color=red&style=for-the-badge",
                7,
                BadgeParams {
                    style: BadgeStyle::ForTheBadge,
                    label_color: Some("red"),
                    ..BadgeParams::new("", "7")
                },
                "7",
                "7",
            ),
            (
                "label=AT%26T&color=%23fff",
                u64::MAX,
                BadgeParams {
                    message_color: Some("#fff"),
                    ..BadgeParams::new("AT&T", "18446Q")
                },
                "AT&amp;T: 18446Q",
                "AT&amp;T: 18,446,744,073,709,551,615",
            ),
            (
                "label=%E6%97%A5%E6%9C%AC%E8%AA%9E&style=plastic",
                42,
                BadgeParams {
                    style: BadgeStyle::Plastic,
                    ..BadgeParams::new("日本語", "42")
                },
                "日本語: 42",
                "日本語: 42",
            ),
            (
                "link=https%3A%2F%2Fgithub.com%2Fo%2Fr%3Fa%3D1%26b%3D2",
                3,
                BadgeParams {
                    link: Some("https://github.com/o/r?a=1&b=2"),
                    ..hits("3")
                },
                "hits: 3",
                "hits: 3",
            ),
            (
                "link=https%3A%2F%2Fexample.com&style=social&label=stars",
                12,
                BadgeParams {
                    style: BadgeStyle::Social,
                    link: Some("https://example.com"),
                    ..BadgeParams::new("stars", "12")
                },
                "Stars: 12",
                "stars: 12",
            ),
            (
                "logo_color=red",
                1,
                BadgeParams {
                    logo_color: Some("red"),
                    ..hits("1")
                },
                "hits: 1",
                "hits: 1",
            ),
        ];
        #[cfg(feature = "logos")]
        let cases = {
            let mut cases = cases;
            cases.extend([
                (
                    "logo=github",
                    12_345,
                    BadgeParams {
                        logo: Some("github"),
                        ..hits("12.3k")
                    },
                    "hits: 12.3k",
                    "hits: 12,345",
                ),
                (
                    "logo=Rust&logo_color=orange&style=social&label=stars",
                    99,
                    BadgeParams {
                        style: BadgeStyle::Social,
                        logo: Some("rust"),
                        logo_color: Some("orange"),
                        ..BadgeParams::new("stars", "99")
                    },
                    "Stars: 99",
                    "stars: 99",
                ),
                (
                    "logo=docker&label=&style=for-the-badge&logo_color=%23fff",
                    2_500,
                    BadgeParams {
                        style: BadgeStyle::ForTheBadge,
                        logo: Some("docker"),
                        logo_color: Some("#fff"),
                        ..BadgeParams::new("", "2.5k")
                    },
                    "2.5K",
                    "2,500",
                ),
                (
                    "logo=webassembly&label_color=blue&style=flat-square&link=https%3A%2F%2Fspinframework.dev",
                    8,
                    BadgeParams {
                        style: BadgeStyle::FlatSquare,
                        logo: Some("webassembly"),
                        label_color: Some("blue"),
                        link: Some("https://spinframework.dev"),
                        ..hits("8")
                    },
                    "hits: 8",
                    "hits: 8",
                ),
                (
                    "logo=rust&style=plastic&label=&color=orange",
                    10,
                    BadgeParams {
                        style: BadgeStyle::Plastic,
                        logo: Some("rust"),
                        message_color: Some("orange"),
                        ..BadgeParams::new("", "10")
                    },
                    "10",
                    "10",
                ),
            ]);
            cases
        };
        for (query, count, params, shown_name, our_name) in cases {
            let ours = render(&options(query).unwrap(), count);
            assert_eq!(
                ours,
                crate_badge(params, shown_name, our_name),
                "?{query} at {count}"
            );
            assert_eq!(title(&ours), our_name.replace("&amp;", "&"), "?{query}");
            #[cfg(feature = "logos")]
            assert_eq!(
                ours.contains("<image "),
                query.contains("logo="),
                "?{query}: {ours}"
            );
        }
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
            for (name, style) in styles() {
                for link in [
                    None,
                    Some(Link("https://example.com/?a=1&b=\"2\"".to_owned())),
                ] {
                    let options = BadgeOptions {
                        label: label.to_owned(),
                        style,
                        link: link.clone(),
                        ..BadgeOptions::default()
                    };
                    let svg = render(&options, 1);
                    // As on shields.io: capitals for-the-badge, a capital first
                    // letter on the social style.
                    let shown = match style {
                        BadgeStyle::ForTheBadge => label.to_uppercase(),
                        BadgeStyle::Social => {
                            let mut chars = label.chars();
                            chars.next().map_or_else(String::new, |first| {
                                first.to_uppercase().chain(chars).collect()
                            })
                        }
                        _ => label.to_owned(),
                    };
                    assert_eq!(
                        texts(&svg),
                        BTreeSet::from([shown, "1".to_owned()]),
                        "{name}"
                    );
                    assert_eq!(title(&svg), format!("{label}: 1"), "{name}");
                    assert!(!svg.contains("<script") && !svg.contains("<foo"), "{svg}");
                    let doc = document(&svg);
                    let href = doc
                        .descendants()
                        .find(|n| n.has_tag_name("a"))
                        .and_then(|a| a.attribute("href"));
                    assert_eq!(href, link.as_ref().map(Link::as_str), "{name}: {svg}");
                }
            }
        }
    }

    #[test]
    fn every_style_carries_the_exact_count() {
        for (name, style) in styles() {
            let svg = render(
                &BadgeOptions {
                    style,
                    ..BadgeOptions::default()
                },
                12_345,
            );
            let shown = if style == BadgeStyle::ForTheBadge {
                ["HITS", "12.3K"]
            } else {
                ["hits", "12.3k"]
            };
            let shown = if style == BadgeStyle::Social {
                ["Hits", "12.3k"]
            } else {
                shown
            };
            assert_eq!(
                texts(&svg),
                BTreeSet::from(shown.map(str::to_owned)),
                "{name}"
            );
            assert_eq!(title(&svg), "hits: 12,345", "{name}");
            assert!(svg.starts_with("<svg "), "a document of its own: {svg}");
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
        assert_eq!(texts(&svg), BTreeSet::from(["1.2M".to_owned()]));
        assert_eq!(title(&svg), "1,234,567");
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
