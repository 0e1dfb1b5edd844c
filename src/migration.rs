//! Badge URLs of other hit counters, answered here, so that a README moves to
//! this counter by changing the host alone: HITS (`hits.sh`), the older HITS at
//! hits.seeyoufarm.com (`/api/count/incr/badge.svg?url=`) and komarev's GitHub
//! profile views counter (`/ghpvc/?username=`).
//!
//! Each form takes the parameters its service took, under the same names, with
//! the same defaults, shows the count the way that service did, and counts on the
//! named counter its page would have: `github.com/owner/repo` for a repository,
//! `github.com/<username>` for a profile, whichever of the forms a badge used.
//! Its counts can be brought along with `POST /api/pages/<key>/import`.

use counter_api::PageKey;
use shields::BadgeStyle;

use crate::badge::{self, BadgeError, BadgeOptions, Color, Link, Logo, Parameter};
use crate::markup::thousands;
use crate::query::{QueryError, shorten};

/// Which service's URL a request came in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `/<host>/<path>.svg`, as hits.sh serves.
    Hits,
    /// `/api/count/incr/badge.svg?url=` (counts) or `/api/count/keep/badge.svg?url=`
    /// (shows), as hits.seeyoufarm.com served.
    SeeYouFarm { count: bool },
    /// `/ghpvc/?username=`, as komarev.com serves.
    Komarev,
}

/// What a foreign badge URL asks for: the counter, how to draw it, what to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignBadge {
    pub key: PageKey,
    pub options: BadgeOptions,
    pub shows: Shows,
}

/// What the badge's message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shows {
    /// HITS' `view=total` (its default): the total, in full with separators
    /// (`1,234`), plus `extra` (HITS' `extraCount`, komarev's `base`).
    Total { extra: u64 },
    /// HITS' `view=today-total`: `today / total`, with separators.
    TodayTotal { extra: u64 },
    /// hits.seeyoufarm.com's `today / total`, plain digits.
    PlainTodayTotal,
    /// komarev's `abbreviated=true`: the total plus `base`, cut short (`1.2k`).
    Abbreviated { extra: u64 },
    /// komarev's `style=pixel`: a one-pixel image that counts the view unseen.
    Pixel,
}

/// Why a foreign badge URL was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForeignError {
    #[error(transparent)]
    Badge(#[from] BadgeError),
    #[error("{parameter} is missing: {what}")]
    Missing {
        parameter: &'static str,
        what: &'static str,
    },
    #[error(
        "url={0:?} is not a page's address: give an http:// or https:// URL such as \
         https://github.com/owner/repo (written %3A%2F%2F after https in the badge's URL)"
    )]
    Url(String),
    #[error("the counter key {key:?} this URL names is not one this counter can hold: {reason}")]
    Key { key: String, reason: String },
    #[error(
        "username={0:?} is not a GitHub username: 1 to 39 letters, digits and single \
         hyphens, not starting or ending with one"
    )]
    Username(String),
    #[error("{parameter}={value:?} is not {what}")]
    Value {
        parameter: &'static str,
        value: String,
        what: &'static str,
    },
}

impl From<QueryError> for ForeignError {
    fn from(error: QueryError) -> Self {
        Self::Badge(error.into())
    }
}

const fn p(name: &'static str) -> Parameter {
    Parameter { name, aliases: &[] }
}

/// hits.sh's parameters (its `HitsController`), with its defaults: label `hits`,
/// color `#4c1`, labelColor `#555`, style `flat`, view `total`.
const HITS_PARAMETERS: [Parameter; 9] = [
    p("view"),
    p("style"),
    p("label"),
    p("color"),
    p("labelColor"),
    p("link"),
    p("logo"),
    p("logoWidth"),
    p("extraCount"),
];

/// hits.seeyoufarm.com's parameters (its `groupApiCount`), with its defaults:
/// title `hits`, title_bg `#555555`, count_bg `#79C83D`, icon_color `#E7E7E7`.
const SEEYOUFARM_PARAMETERS: [Parameter; 7] = [
    p("url"),
    p("title"),
    p("title_bg"),
    p("count_bg"),
    p("icon"),
    p("icon_color"),
    p("edge_flat"),
];

/// komarev's parameters (its `public/index.php` and README), with its defaults:
/// label `Profile views`, color `blue`, style `flat`, base 0, abbreviated false.
const KOMAREV_PARAMETERS: [Parameter; 6] = [
    p("username"),
    p("label"),
    p("color"),
    p("style"),
    p("base"),
    p("abbreviated"),
];

/// The page `/<path>.svg` would count on HITS, if `path` is one: its first segment
/// names a host (HITS requires a `.` in it), so other `.svg` paths stay 404.
pub fn hits_key(path: &str) -> Option<Result<PageKey, ForeignError>> {
    let urn = path.strip_prefix('/')?.strip_suffix(".svg")?;
    let host = urn.split('/').next()?;
    host.contains('.').then(|| page_key(urn))
}

/// The badge a request in `form` asks for.
pub fn parse(
    form: Form,
    hits_key: Option<PageKey>,
    pairs: &[(String, String)],
) -> Result<ForeignBadge, ForeignError> {
    match form {
        Form::Hits => hits(hits_key.expect("a HITS URL names its page"), pairs),
        Form::SeeYouFarm { count } => see_you_farm(count, pairs),
        Form::Komarev => komarev(pairs),
    }
}

fn hits(key: PageKey, pairs: &[(String, String)]) -> Result<ForeignBadge, ForeignError> {
    badge::reject_unknown(pairs, &HITS_PARAMETERS)?;
    let one = |name| badge::option(pairs, p(name));
    let mut options = BadgeOptions {
        color: Some(fixed("#4c1")),
        label_color: Some(fixed("#555")),
        ..BadgeOptions::default()
    };
    if let Some(label) = one("label")? {
        options.label = badge::parse_label(label)?;
    }
    if let Some(style) = one("style")? {
        options.style = badge::parse_style(style)?;
    }
    if let Some(color) = badge::color(pairs, p("color"))? {
        options.color = Some(color);
    }
    if let Some(color) = badge::color(pairs, p("labelColor"))? {
        options.label_color = Some(color);
    }
    options.link = one("link")?.map(Link::parse).transpose()?;
    options.logo = one("logo")?.map(Logo::parse).transpose()?;
    // HITS' 0, its default, is the renderer's own width.
    options.logo_width = match one("logoWidth")? {
        None => None,
        Some(text) => Some(number(
            text,
            "logoWidth",
            "a logo width: a whole number of pixels from 0 to 100",
            100,
        )?)
        .filter(|&width| width > 0)
        .map(|width| width as u32),
    };
    let extra = match one("extraCount")? {
        None => 0,
        Some(text) => number(
            text,
            "extraCount",
            "a count to add: a whole number",
            u64::MAX,
        )?,
    };
    let shows = match one("view")? {
        None | Some("total") => Shows::Total { extra },
        Some("today-total") => Shows::TodayTotal { extra },
        Some(other) => {
            return Err(ForeignError::Value {
                parameter: "view",
                value: shorten(other),
                what: "a HITS view: total (the default) or today-total",
            });
        }
    };
    Ok(ForeignBadge {
        key,
        options,
        shows,
    })
}

fn see_you_farm(count: bool, pairs: &[(String, String)]) -> Result<ForeignBadge, ForeignError> {
    badge::reject_unknown(pairs, &SEEYOUFARM_PARAMETERS)?;
    let one = |name| badge::option(pairs, p(name));
    let url = one("url")?
        .filter(|url| !url.is_empty())
        .ok_or(ForeignError::Missing {
            parameter: "url",
            what: "give the address of the page the badge counts, such as \
                   url=https%3A%2F%2Fgithub.com%2Fowner%2Frepo",
        })?;
    let key = url_key(url)?;
    let mut options = BadgeOptions {
        color: Some(fixed("#79c83d")),
        label_color: Some(fixed("#555555")),
        logo_color: Some(fixed("#e7e7e7")),
        count,
        ..BadgeOptions::default()
    };
    if let Some(title) = one("title")? {
        options.label = badge::parse_label(title)?;
    }
    // Its generator wrote empty values for options left alone (`icon=&...`).
    let given = |name| one(name).map(|value| value.filter(|v| !v.is_empty()));
    if given("title_bg")?.is_some() {
        options.label_color = badge::color(pairs, p("title_bg"))?;
    }
    if given("count_bg")?.is_some() {
        options.color = badge::color(pairs, p("count_bg"))?;
    }
    if given("icon_color")?.is_some() {
        options.logo_color = badge::color(pairs, p("icon_color"))?;
    }
    // Its icons were Simple Icons file names: `github.svg`.
    options.logo = given("icon")?
        .map(|icon| Logo::parse(icon.strip_suffix(".svg").unwrap_or(icon)))
        .transpose()?;
    if let Some(flat) = given("edge_flat")? {
        options.style = match flat.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => BadgeStyle::FlatSquare,
            "false" | "0" | "f" => BadgeStyle::Flat,
            _ => {
                return Err(ForeignError::Value {
                    parameter: "edge_flat",
                    value: shorten(flat),
                    what: "true (square corners) or false (round, the default)",
                });
            }
        };
    }
    Ok(ForeignBadge {
        key,
        options,
        shows: Shows::PlainTodayTotal,
    })
}

fn komarev(pairs: &[(String, String)]) -> Result<ForeignBadge, ForeignError> {
    badge::reject_unknown(pairs, &KOMAREV_PARAMETERS)?;
    let one = |name| badge::option(pairs, p(name));
    let username = one("username")?
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or(ForeignError::Missing {
            parameter: "username",
            what: "give the GitHub username whose profile views the badge counts, \
                   such as username=octocat",
        })?;
    if !is_github_username(username) {
        return Err(ForeignError::Username(shorten(username)));
    }
    let key = page_key(&format!("github.com/{username}"))?;
    let mut options = BadgeOptions {
        label: "Profile views".to_owned(),
        color: Some(fixed("blue")),
        ..BadgeOptions::default()
    };
    if let Some(label) = one("label")? {
        options.label = badge::parse_label(label)?;
    }
    if let Some(color) = badge::color(pairs, p("color"))? {
        options.color = Some(color);
    }
    let extra = match one("base")? {
        None => 0,
        Some(text) => number(text, "base", "a count to add: a whole number", u64::MAX)?,
    };
    let abbreviated = match one("abbreviated")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ForeignError::Value {
                parameter: "abbreviated",
                value: shorten(other),
                what: "true (1.2k) or false (1,234, the default)",
            });
        }
    };
    let mut shows = if abbreviated {
        Shows::Abbreviated { extra }
    } else {
        Shows::Total { extra }
    };
    match one("style")? {
        None => {}
        // komarev's own style: an invisible image that counts.
        Some("pixel") => shows = Shows::Pixel,
        Some(style) => options.style = badge::parse_style(style)?,
    }
    Ok(ForeignBadge {
        key,
        options,
        shows,
    })
}

/// The counter of the page at `url`: its host and path, as hits.seeyoufarm.com
/// keyed its counters (`github.com/owner/repo`), without the query, the fragment
/// or a trailing `/`; the host in lowercase, as hosts are.
fn url_key(url: &str) -> Result<PageKey, ForeignError> {
    let refuse = || ForeignError::Url(shorten(url));
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| {
            url.get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &url[scheme.len()..])
        })
        .ok_or_else(refuse)?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(refuse());
    }
    let path = path.trim_end_matches('/');
    let key = if path.is_empty() {
        host.to_ascii_lowercase()
    } else {
        format!("{}/{path}", host.to_ascii_lowercase())
    };
    page_key(&key)
}

fn page_key(key: &str) -> Result<PageKey, ForeignError> {
    key.parse()
        .map_err(|error: counter_api::InvalidPage| ForeignError::Key {
            key: shorten(key),
            reason: error.to_string(),
        })
}

/// GitHub's rule for usernames.
fn is_github_username(name: &str) -> bool {
    (1..=39).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn number(
    text: &str,
    parameter: &'static str,
    what: &'static str,
    max: u64,
) -> Result<u64, ForeignError> {
    text.parse::<u64>()
        .ok()
        .filter(|n| *n <= max && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ForeignError::Value {
            parameter,
            value: shorten(text),
            what,
        })
}

fn fixed(color: &str) -> Color {
    Color::parse("default", color).expect("the services' defaults are colors")
}

/// The badge's SVG for a counter at `total` today `today`.
pub fn render(badge: &ForeignBadge, total: u64, today: u64) -> String {
    let label = &badge.options.label;
    let (message, name) = match badge.shows {
        Shows::Total { extra } => {
            let shown = thousands(total.saturating_add(extra));
            (shown.clone(), shown)
        }
        Shows::TodayTotal { extra } => {
            let shown = format!(
                "{} / {}",
                thousands(today),
                thousands(total.saturating_add(extra))
            );
            (shown.clone(), shown)
        }
        Shows::PlainTodayTotal => {
            let shown = format!("{today} / {total}");
            (shown.clone(), shown)
        }
        Shows::Abbreviated { extra } => {
            let total = total.saturating_add(extra);
            (badge::abbreviate(total), thousands(total))
        }
        Shows::Pixel => {
            return r#"<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1" role="img" aria-label="views"><title>views</title></svg>"#.to_owned();
        }
    };
    badge::render_message(
        &badge.options,
        &message,
        &badge::accessible_name(label, &name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query;

    fn parse_query(
        form: Form,
        key: Option<&str>,
        query: &str,
    ) -> Result<ForeignBadge, ForeignError> {
        parse(
            form,
            key.map(|k| k.parse().unwrap()),
            &query::parse(query).unwrap(),
        )
    }

    #[test]
    fn hits_paths_name_hosts() {
        assert_eq!(
            hits_key("/github.com/owner/repo.svg"),
            Some(Ok("github.com/owner/repo".parse().unwrap()))
        );
        assert_eq!(hits_key("/favicon.svg"), None, "no host: not a HITS URL");
        assert_eq!(hits_key("/github.com/o/r.png"), None);
        assert!(matches!(
            hits_key("/github.com//r.svg"),
            Some(Err(ForeignError::Key { .. }))
        ));
    }

    #[test]
    fn hits_defaults_and_parameters() {
        let badge = parse_query(Form::Hits, Some("github.com/o/r"), "").unwrap();
        assert_eq!(badge.options.label, "hits");
        assert_eq!(badge.options.color, Some(fixed("#4c1")));
        assert_eq!(badge.options.label_color, Some(fixed("#555")));
        assert_eq!(badge.shows, Shows::Total { extra: 0 });
        let badge = parse_query(
            Form::Hits,
            Some("github.com/o/r"),
            "view=today-total&style=flat-square&label=views&color=%2379C83D&labelColor=white&extraCount=1000&logoWidth=20",
        )
        .unwrap();
        assert_eq!(badge.shows, Shows::TodayTotal { extra: 1000 });
        assert_eq!(badge.options.style, BadgeStyle::FlatSquare);
        assert_eq!(badge.options.color, Some(fixed("#79c83d")));
        assert_eq!(badge.options.label_color, Some(fixed("white")));
        assert_eq!(badge.options.logo_width, Some(20));
        let svg = render(&badge, 1234, 5);
        assert!(svg.contains(">5 / 2,234</text>"), "{svg}");
        assert!(svg.contains("<title>views: 5 / 2,234</title>"), "{svg}");
    }

    #[test]
    fn see_you_farm_url_names_the_page() {
        let badge = parse_query(
            Form::SeeYouFarm { count: true },
            None,
            "url=https%3A%2F%2FGitHub.com%2Fowner%2Frepo%2F%3Ftab%3D1&count_bg=%2379C83D&title_bg=%23555555&icon=&icon_color=%23E7E7E7&title=hits&edge_flat=false",
        )
        .unwrap();
        assert_eq!(badge.key.as_str(), "github.com/owner/repo");
        assert_eq!(badge.options.logo, None);
        assert_eq!(badge.options.style, BadgeStyle::Flat);
        assert!(badge.options.count);
        let svg = render(&badge, 1234, 5);
        assert!(svg.contains(">5 / 1234<"), "{svg}");
        let keep = parse_query(
            Form::SeeYouFarm { count: false },
            None,
            "url=http://example.com&edge_flat=true",
        )
        .unwrap();
        assert_eq!(keep.key.as_str(), "example.com");
        assert!(!keep.options.count);
        assert_eq!(keep.options.style, BadgeStyle::FlatSquare);
    }

    #[test]
    fn komarev_username_is_a_github_profile() {
        let badge = parse_query(Form::Komarev, None, "username=octo-cat").unwrap();
        assert_eq!(badge.key.as_str(), "github.com/octo-cat");
        assert_eq!(badge.options.label, "Profile views");
        assert_eq!(badge.shows, Shows::Total { extra: 0 });
        let badge = parse_query(
            Form::Komarev,
            None,
            "username=a&base=1000&abbreviated=true&style=for-the-badge&color=0e75b6",
        )
        .unwrap();
        assert_eq!(badge.shows, Shows::Abbreviated { extra: 1000 });
        assert_eq!(badge.options.style, BadgeStyle::ForTheBadge);
        assert!(render(&badge, 234, 0).contains("1.2K"));
        let pixel = parse_query(Form::Komarev, None, "username=a&style=pixel").unwrap();
        assert_eq!(pixel.shows, Shows::Pixel);
    }

    #[test]
    fn refusals_say_what_is_allowed() {
        let message = |form, key, query| parse_query(form, key, query).unwrap_err().to_string();
        let hits = Some("github.com/o/r");
        assert_eq!(
            message(Form::Hits, hits, "colour=red"),
            "unknown parameter \"colour\"; the parameters allowed here are view, style, label, \
             color, labelColor, link, logo, logoWidth, extraCount"
        );
        assert_eq!(
            message(Form::Hits, hits, "view=daily"),
            "view=\"daily\" is not a HITS view: total (the default) or today-total"
        );
        assert!(
            message(Form::Hits, hits, "extraCount=-1")
                .starts_with("extraCount=\"-1\" is not a count to add")
        );
        assert!(
            message(Form::Hits, hits, "color=nope").starts_with("color=\"nope\" is not a color")
        );
        let farm = Form::SeeYouFarm { count: true };
        assert!(message(farm, None, "").starts_with("url is missing"));
        assert!(
            message(farm, None, "url=ftp://x.org/")
                .starts_with("url=\"ftp://x.org/\" is not a page's address")
        );
        assert!(
            message(farm, None, "url=https://x.org:8080/")
                .contains("is not one this counter can hold")
        );
        assert!(
            message(farm, None, "url=https://x.org&edge_flat=maybe")
                .starts_with("edge_flat=\"maybe\"")
        );
        assert!(
            message(farm, None, "url=https://x.org&count_bg=%23zz")
                .starts_with("count_bg=\"#zz\" is not a color")
        );
        assert!(message(Form::Komarev, None, "").starts_with("username is missing"));
        assert!(
            message(Form::Komarev, None, "username=a/b")
                .starts_with("username=\"a/b\" is not a GitHub username")
        );
        assert!(
            message(Form::Komarev, None, "username=a&abbreviated=yes")
                .starts_with("abbreviated=\"yes\"")
        );
        assert!(
            message(Form::Komarev, None, "username=a&style=3d")
                .starts_with("style=\"3d\" is not a badge style")
        );
    }
}
