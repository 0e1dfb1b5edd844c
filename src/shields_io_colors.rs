// What shields.io draws for each color: included by the component's unit tests
// (src/badge.rs) and the end-to-end suite (e2e/tests/badges.rs), so both check
// the same cases.

/// What shields.io draws for a color, from badge-maker's `lib/color.js` and its
/// tests (`color.spec.js`: `normalizeColor`, `toSvgColor`) in badges/shields:
/// the fill it writes, or `None` where it ignores the color and draws its
/// default. Beside it, the fill we write, or `None` where we refuse the
/// color with a 400. They agree but for the cases marked, where shields.io
/// silently draws something the URL's author did not mean.
const SHIELDS_IO_COLORS: &[(&str, Option<&str>, Option<&str>)] = &[
    // color.spec.js, normalizeColor and toSvgColor
    ("red", Some("#e05d44"), Some("#e05d44")),
    ("blue", Some("#007ec6"), Some("#007ec6")),
    ("4c1", Some("#4c1"), Some("#4c1")),
    ("f00f00", Some("#f00f00"), Some("#f00f00")),
    ("111111", Some("#111111"), Some("#111111")),
    ("ABC123", Some("#abc123"), Some("#abc123")),
    ("#ccc", Some("#ccc"), Some("#ccc")),
    ("#fffe", Some("#fffe"), Some("#fffe")),
    ("#fffeffff", Some("#fffeffff"), Some("#fffeffff")),
    ("#ABC123", Some("#abc123"), Some("#abc123")),
    ("papayawhip", Some("papayawhip"), Some("papayawhip")),
    ("purple", Some("purple"), Some("purple")),
    // Differs: shields.io writes the padded text, which SVG reads as CSS blue
    // (#0000ff), not its own blue; the renderer trims it to #007ec6. Neither
    // is surely meant, so it is refused.
    ("  blue ", Some("  blue "), None),
    (
        "rgb(100%, 200%, 222%)",
        Some("rgb(100%, 200%, 222%)"),
        Some("rgb(100%, 200%, 222%)"),
    ),
    (
        "rgb(122, 200, 222)",
        Some("rgb(122, 200, 222)"),
        Some("rgb(122, 200, 222)"),
    ),
    (
        "rgb(122, 200, 222, 1)",
        Some("rgb(122, 200, 222, 1)"),
        Some("rgb(122, 200, 222, 1)"),
    ),
    (
        "rgba(100, 20, 111, 1)",
        Some("rgba(100, 20, 111, 1)"),
        Some("rgba(100, 20, 111, 1)"),
    ),
    (
        "hsl(122, 200%, 222%)",
        Some("hsl(122, 200%, 222%)"),
        Some("hsl(122, 200%, 222%)"),
    ),
    (
        "hsla(122, 200%, 222%, 1)",
        Some("hsla(122, 200%, 222%, 1)"),
        Some("hsla(122, 200%, 222%, 1)"),
    ),
    ("", None, None),
    ("not-a-color", None, None),
    ("#ABCFGH", None, None),
    ("rgb(-100, 20, 111)", None, None),
    ("rgb(100%, 200, 222)", None, None),
    ("rgba(-100, 20, 111, 1.1)", None, None),
    ("hsl(122, 200, 222, 1)", None, None),
    ("hsl(122, 200, 222)", None, None),
    ("hsl(122, 200, 222%)", None, None),
    ("lightgray", Some("#9f9f9f"), Some("#9f9f9f")),
    ("informational", Some("#007ec6"), Some("#007ec6")),
    // shields.io's other names and aliases (color.js)
    ("brightgreen", Some("#4c1"), Some("#4c1")),
    ("green", Some("#97ca00"), Some("#97ca00")),
    ("yellowgreen", Some("#a4a61d"), Some("#a4a61d")),
    ("yellow", Some("#dfb317"), Some("#dfb317")),
    ("orange", Some("#fe7d37"), Some("#fe7d37")),
    ("grey", Some("#555"), Some("#555")),
    ("gray", Some("#555"), Some("#555")),
    ("lightgrey", Some("#9f9f9f"), Some("#9f9f9f")),
    ("success", Some("#4c1"), Some("#4c1")),
    ("important", Some("#fe7d37"), Some("#fe7d37")),
    ("critical", Some("#e05d44"), Some("#e05d44")),
    ("inactive", Some("#9f9f9f"), Some("#9f9f9f")),
    // What the README authors paste; css-color-converter's own forms
    ("white", Some("white"), Some("white")),
    ("black", Some("black"), Some("black")),
    ("silver", Some("silver"), Some("silver")),
    (
        "rebeccapurple",
        Some("rebeccapurple"),
        Some("rebeccapurple"),
    ),
    ("555", Some("#555"), Some("#555")),
    ("#007EC6", Some("#007ec6"), Some("#007ec6")),
    (
        "rgb(0,128,255)",
        Some("rgb(0,128,255)"),
        Some("rgb(0,128,255)"),
    ),
    (
        "hsl(120,100%,25%)",
        Some("hsl(120,100%,25%)"),
        Some("hsl(120,100%,25%)"),
    ),
    (
        "rgba(0,128,255,.5)",
        Some("rgba(0,128,255,.5)"),
        Some("rgba(0,128,255,.5)"),
    ),
    (
        "rgba(0,128,255,50%)",
        Some("rgba(0,128,255,50%)"),
        Some("rgba(0,128,255,50%)"),
    ),
    (
        "rgb(0 128 255)",
        Some("rgb(0 128 255)"),
        Some("rgb(0 128 255)"),
    ),
    (
        "rgb(0 128 255 / 50%)",
        Some("rgb(0 128 255 / 50%)"),
        Some("rgb(0 128 255 / 50%)"),
    ),
    (
        "hsl(120deg 100% 25%)",
        Some("hsl(120deg 100% 25%)"),
        Some("hsl(120deg 100% 25%)"),
    ),
    (
        "hsla(0.5turn, 100%, 25%, 0.5)",
        Some("hsla(0.5turn, 100%, 25%, 0.5)"),
        Some("hsla(0.5turn, 100%, 25%, 0.5)"),
    ),
    ("rgb(1.5, 2, 3)", None, None),
    ("rgb(10, 20)", None, None),
    ("rgb(10, 20, 30", None, None),
    ("hwb(120 0% 0%)", None, None),
    ("lab(50% 40 59)", None, None),
    ("transparent", None, None),
    ("12", None, None),
    ("#12345", None, None),
    ("1234567", None, None),
    ("##abc", None, None),
    ("0x123", None, None),
    ("red\"/><script>", None, None),
    // Differs: shields.io takes 4 and 8 digits only after a #, and bare ones
    // draw its default; nothing else is meant by them, so they are taken.
    ("fffe", None, Some("#fffe")),
    ("0e75b6cc", None, Some("#0e75b6cc")),
    // Differs: shields.io knows names only in lowercase and draws its default
    // for these; CSS names are case-insensitive, so they are taken.
    ("White", None, Some("white")),
    ("BrightGreen", None, Some("#4c1")),
    ("RGB(0,128,255)", None, Some("rgb(0,128,255)")),
];
