//! Query strings of the component's routes (`/badge/<key>.svg?style=flat`, ...),
//! parsed strictly.
//!
//! A person types these by hand, so a mistake is answered with an error that
//! names it rather than guessed around: a parameter given twice or one the route
//! does not know is refused, never silently dropped. A `%` that starts no escape
//! is kept as a `%`, as the URL Standard decodes it.

/// Why a query string was refused; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query part {0:?} is not valid UTF-8 once its percent escapes are decoded")]
    NotUtf8(String),
    #[error("the parameter {0:?} is given more than once; give it once")]
    Repeated(String),
    #[error("unknown parameter {name:?}; {allowed}")]
    Unknown { name: String, allowed: String },
}

/// Splits a query string (the part after `?`, possibly empty) into its decoded
/// `name=value` pairs, in order.
///
/// `+` is a space and `%XX` a byte, as in HTML forms. A pair without `=` has an
/// empty value, and empty pairs (`a=1&&b=2`, a trailing `&`) are skipped, as
/// browsers produce them.
pub fn parse(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The value of the parameter `name`, if it is given.
///
/// Given twice it is an error rather than first or last wins: `?label=a&label=b`
/// is a mistake in a hand-written URL, and either guess would hide it.
pub fn one<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, QueryError> {
    let mut values = pairs.iter().filter(|(n, _)| n == name);
    let first = values.next();
    if values.next().is_some() {
        return Err(QueryError::Repeated(shorten(name)));
    }
    Ok(first.map(|(_, value)| value.as_str()))
}

/// Refuses the first parameter that is not in `allowed`, so that a misspelt one
/// (`colour=red`) is reported instead of having no effect.
pub fn reject_unknown(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), QueryError> {
    let Some((name, _)) = pairs.iter().find(|(n, _)| !allowed.contains(&n.as_str())) else {
        return Ok(());
    };
    let allowed = if allowed.is_empty() {
        "this address takes no parameters".to_owned()
    } else {
        format!("the parameters allowed here are {}", allowed.join(", "))
    };
    Err(QueryError::Unknown {
        name: shorten(name),
        allowed,
    })
}

/// Keeps input quoted back in an error message short: a URL can be kilobytes.
pub(crate) fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

fn decode(part: &str) -> Result<String, QueryError> {
    let mut bytes = Vec::with_capacity(part.len());
    let mut rest = part.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => match rest {
                [high, low, tail @ ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    bytes.push((hex_value(*high) << 4) | hex_value(*low));
                    rest = tail;
                }
                // As the URL Standard decodes, and browsers and shields.io with
                // it: a `%` that starts no escape is a `%`, so a pasted
                // `hsl(120,100%,25%)` reads as written.
                _ => bytes.push(b'%'),
            },
            byte => bytes.push(byte),
        }
    }
    String::from_utf8(bytes).map_err(|_| QueryError::NotUtf8(shorten(part)))
}

fn hex_value(digit: u8) -> u8 {
    char::from(digit)
        .to_digit(16)
        .map_or(0, |value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn decodes_pairs_in_order() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(
            parse("label=my+page&color=%23fe7d37&style=flat"),
            Ok(pairs(&[
                ("label", "my page"),
                ("color", "#fe7d37"),
                ("style", "flat")
            ]))
        );
        assert_eq!(
            parse("a&&b=&=c&"),
            Ok(pairs(&[("a", ""), ("b", ""), ("", "c")]))
        );
        assert_eq!(
            parse("k=a=b%2Bc%20d"),
            Ok(pairs(&[("k", "a=b+c d")])),
            "only the first = splits"
        );
        assert_eq!(
            parse("label=%E2%9C%93%c3%a9"),
            Ok(pairs(&[("label", "✓é")]))
        );
        assert_eq!(parse("label=✓"), Ok(pairs(&[("label", "✓")])), "raw UTF-8");
    }

    #[test]
    fn a_percent_that_starts_no_escape_is_a_percent() {
        for (query, value) in [
            ("label=100%", "100%"),
            ("label=%4", "%4"),
            ("label=%zz", "%zz"),
            ("label=%+1", "% 1"),
            ("label=%4é", "%4é"),
            ("color=hsl(120,100%,25%)", "hsl(120,100%,25%)"),
            ("color=hsl(120,100%25,25%25)", "hsl(120,100%,25%)"),
        ] {
            let name = query.split_once('=').unwrap().0;
            assert_eq!(parse(query), Ok(pairs(&[(name, value)])), "{query}");
        }
        assert_eq!(parse("a%g=1"), Ok(pairs(&[("a%g", "1")])));
    }

    #[test]
    fn refuses_invalid_utf8() {
        let error = parse("label=%ff%fe").unwrap_err();
        assert_eq!(error, QueryError::NotUtf8("%ff%fe".to_owned()));
        assert!(error.to_string().contains("not valid UTF-8"), "{error}");
        let long = format!("label={}", "%ff".repeat(1000));
        let message = parse(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "echoes too much: {message}");
    }

    #[test]
    fn one_value_per_parameter() {
        let given = pairs(&[("label", "a"), ("style", "flat"), ("label", "b")]);
        assert_eq!(one(&given, "style"), Ok(Some("flat")));
        assert_eq!(one(&given, "color"), Ok(None));
        let error = one(&given, "label").unwrap_err();
        assert_eq!(error, QueryError::Repeated("label".to_owned()));
        assert_eq!(
            error.to_string(),
            "the parameter \"label\" is given more than once; give it once"
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        let given = pairs(&[("label", "a"), ("colour", "red")]);
        assert_eq!(reject_unknown(&given, &["label", "colour"]), Ok(()));
        let error = reject_unknown(&given, &["label", "color", "style"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown parameter \"colour\"; the parameters allowed here are label, color, style"
        );
        let error = reject_unknown(&given, &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown parameter \"label\"; this address takes no parameters"
        );
        assert_eq!(reject_unknown(&[], &[]), Ok(()));
    }

    #[test]
    fn long_names_are_shortened_in_messages() {
        let name = "x".repeat(5000);
        let message = reject_unknown(&pairs(&[(&name, "")]), &["label"])
            .unwrap_err()
            .to_string();
        assert!(message.len() < 200, "echoes too much: {message}");
        assert_eq!(shorten("short"), "short");
        assert_eq!(shorten(&"é".repeat(41)), format!("{}...", "é".repeat(40)));
    }
}
