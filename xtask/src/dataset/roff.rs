//! Manual pages (man and mdoc roff) to plain text.
//!
//! `groff -Tutf8` would render better, but its output changes with groff's version and the
//! terminal width; the corpus must rebuild byte for byte anywhere, so we strip roff ourselves.
//! What matters for a language-model corpus is the prose: requests that only lay out the page are
//! dropped, text-bearing macros keep their words, escapes become the characters they print.

/// Requests whose arguments are words a reader sees.
const TEXT_MACROS: &[&str] = &[
    "SH", "SS", "Sh", "Ss", "B", "I", "SM", "SB", "IP", "HP", "TP", "Nm", "Nd", "It", "Ar", "Fl",
    "Op", "Pa", "Em", "Sy", "Dv", "Xr", "Ql", "Dq", "Sq", "Li", "Cm", "Va", "Fn", "Ft", "Fa", "Ev",
    "Er", "Ic", "D1", "Dl", "Tn", "Ux", "Bx", "At", "St", "Aq", "Pq", "Q", "MT", "OP",
];
/// Font-alternating requests: arguments are joined without spaces (`.BR ls (1)` is `ls(1)`).
const ALTERNATING: &[&str] = &["BR", "RB", "BI", "IB", "IR", "RI"];
/// Requests that start a new paragraph.
const BREAKS: &[&str] = &[
    "PP", "P", "LP", "sp", "Pp", "Sh", "SH", "SS", "Ss", "TP", "IP", "HP", "br", "Bl", "El", "Bd",
    "Ed", "nf", "fi", "EX", "EE",
];

/// Converts one manual page to plain text; `None` for a page that only includes another
/// (`.so man1/other.1`), which is no document of its own.
pub fn to_text(source: &str) -> Option<String> {
    let mut out = String::with_capacity(source.len());
    let mut lines = source.lines();
    let mut table_format = false;
    let mut saw_text = false;
    while let Some(raw) = lines.next() {
        let line = raw.trim_end();
        if table_format {
            // tbl: format lines run up to the one that ends with a '.'; data lines follow.
            table_format = !line.ends_with('.');
            continue;
        }
        if let Some(request) = line.strip_prefix('.').or_else(|| line.strip_prefix('\'')) {
            let (name, args) = split_request(request);
            match name {
                "" | "\\\"" => {}
                "so" if !saw_text => return None,
                "de" | "ig" | "am" => skip_block(&mut lines),
                "TS" => table_format = true,
                _ if ALTERNATING.contains(&name) => {
                    push_line(&mut out, &unescape(&parse_args(args).concat()))
                }
                _ if TEXT_MACROS.contains(&name) => {
                    if BREAKS.contains(&name) {
                        paragraph(&mut out);
                    }
                    let words = parse_args(args).join(" ");
                    if !words.is_empty() {
                        push_line(&mut out, &unescape(&words));
                        saw_text = true;
                    }
                }
                _ if BREAKS.contains(&name) => paragraph(&mut out),
                _ => {}
            }
            continue;
        }
        if line.starts_with("\\\"") {
            continue;
        }
        let text = unescape(&line.replace('\t', " "));
        if !text.trim().is_empty() {
            saw_text = true;
        }
        push_line(&mut out, &text);
    }
    let text = out.trim().to_string();
    (!text.is_empty()).then_some(text + "\n")
}

fn split_request(request: &str) -> (&str, &str) {
    let request = request.trim_start();
    match request.find([' ', '\t']) {
        Some(at) => (&request[..at], request[at..].trim_start()),
        None => (request, ""),
    }
}

/// Skips a macro definition or ignored block, up to its closing `..`.
fn skip_block<'a>(lines: &mut impl Iterator<Item = &'a str>) {
    for line in lines.by_ref() {
        if line.trim_end() == ".." {
            break;
        }
    }
}

/// Splits macro arguments on spaces, keeping "quoted strings" whole.
fn parse_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let Some(first) = chars.next() else { break };
        let mut arg = String::new();
        if first == '"' {
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.next_if_eq(&'"').is_some() => arg.push('"'),
                    '"' => break,
                    c => arg.push(c),
                }
            }
        } else {
            arg.push(first);
            while let Some(c) = chars.next_if(|c| *c != ' ' && *c != '\t') {
                arg.push(c);
                // An escaped space belongs to the argument.
                if c == '\\'
                    && let Some(next) = chars.next()
                {
                    arg.push(next);
                }
            }
        }
        out.push(arg);
    }
    out
}

fn paragraph(out: &mut String) {
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

fn push_line(out: &mut String, text: &str) {
    out.push_str(text.trim_end());
    out.push('\n');
}

/// The characters roff's named glyphs print; unknown names print nothing.
fn glyph(name: &str) -> &'static str {
    match name {
        "aq" => "'",
        "dq" => "\"",
        "em" => "—",
        "en" => "–",
        "hy" | "mi" => "-",
        "lq" => "“",
        "rq" => "”",
        "oq" => "‘",
        "cq" => "’",
        "Fo" => "«",
        "Fc" => "»",
        "bu" => "•",
        "co" => "©",
        "rg" | "R" => "®",
        "tm" | "Tm" => "™",
        "mu" => "×",
        "de" => "°",
        ">=" => "≥",
        "<=" => "≤",
        "->" => "→",
        "<-" => "←",
        "ti" | "ap" => "~",
        "ha" | "a^" => "^",
        "rs" => "\\",
        "ga" => "`",
        "pl" => "+",
        "eq" => "=",
        "sl" => "/",
        "ba" | "or" => "|",
        "lB" => "[",
        "rB" => "]",
        "lC" => "{",
        "rC" => "}",
        "la" => "⟨",
        "ra" => "⟩",
        "Do" => "$",
        "sh" => "#",
        "ss" => "ß",
        "fm" => "′",
        "sc" => "§",
        "ps" => "¶",
        "dg" => "†",
        "Eu" | "eu" => "€",
        "Po" => "£",
        "ct" => "¢",
        "Ye" => "¥",
        "+-" => "±",
        "12" => "½",
        "14" => "¼",
        "34" => "¾",
        "..." => "…",
        _ => "",
    }
}

/// Reads the name after `\(` (two characters), `\[` (up to `]`) or a single character.
fn escape_name(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    match chars.next() {
        Some('(') => chars.by_ref().take(2).collect(),
        Some('[') => chars.by_ref().take_while(|c| *c != ']').collect(),
        Some(c) => c.to_string(),
        None => String::new(),
    }
}

/// Skips a delimited argument such as `\h'1n'` or `\w"text"`.
fn skip_delimited(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    if let Some(delim) = chars.next() {
        for c in chars.by_ref() {
            if c == delim {
                break;
            }
        }
    }
}

/// Replaces roff escapes in running text with what they print.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else { break };
        match e {
            '"' => break,
            'f' | 'F' | 'n' | 'g' | 'k' | 'm' | 'M' | 'Y' | 'V' => {
                escape_name(&mut chars);
            }
            '*' => out.push_str(glyph(&escape_name(&mut chars))),
            '(' => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(glyph(&name));
            }
            '[' => {
                let name: String = chars.by_ref().take_while(|c| *c != ']').collect();
                match name
                    .strip_prefix('u')
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                {
                    Some(code) => out.extend(char::from_u32(code)),
                    None => out.push_str(glyph(&name)),
                }
            }
            's' => {
                chars.next_if(|c| *c == '+' || *c == '-');
                if chars.next_if_eq(&'(').is_some() {
                    chars.next();
                    chars.next();
                } else {
                    chars.next_if(|c| c.is_ascii_digit());
                }
            }
            'h' | 'v' | 'w' | 'l' | 'L' | 'o' | 'X' | 'b' | 'D' | 'x' | 'Z' | 'N' | 'A' | 'B'
            | 'C' | 'R' | 'S' => skip_delimited(&mut chars),
            'e' | '\\' => out.push('\\'),
            '-' => out.push('-'),
            ' ' | '~' | '0' => out.push(' '),
            '&' | '|' | '^' | ',' | '/' | '%' | ':' | 'c' | 'd' | 'u' | 'p' | 'z' | '{' | '}'
            | 'a' | 't' | 'r' => {}
            '\'' => out.push('´'),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str, expected: &str) {
        assert_eq!(
            to_text(source).as_deref(),
            Some(expected),
            "source: {source:?}"
        );
    }

    #[test]
    fn keeps_prose_and_drops_layout() {
        check(
            ".\\\" comment\n.TH LS 1 \"Septembre 2022\"\n.SH NOM\nls \\- Afficher le contenu\n.PP\nTrier \\fIFICHIER\\fPs.\n",
            "NOM\nls - Afficher le contenu\n\nTrier FICHIERs.\n",
        );
    }

    #[test]
    fn alternating_fonts_join_arguments() {
        check(
            ".BR ls (1),\n.B \"two words\" more\n",
            "ls(1),\ntwo words more\n",
        );
    }

    #[test]
    fn escapes_print_their_glyphs() {
        assert_eq!(
            unescape("«\\ .\\ » \\(em \\[u00E9] \\*(lqx\\*(rq \\s-1A\\s0 \\e"),
            "« . » — é “x” A \\"
        );
        assert_eq!(unescape("trailing \\\" comment"), "trailing ");
    }

    #[test]
    fn definitions_and_table_formats_are_skipped() {
        check(
            ".de XX\n.ft B\n..\nbody\n.TS\nl l.\na\tb\n.TE\n",
            "body\na b\n",
        );
    }

    #[test]
    fn include_only_pages_are_not_documents() {
        assert_eq!(to_text(".so man3/other.3\n"), None);
        assert_eq!(to_text(".\\\" nothing\n"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_pages_never_panic(source in r#"(\n[.\x27][A-Za-z]{0,3} ?|\\[(\[*fsuhw]?|"|[^\\\n]{1,5}|\n){0,200}"#) {
            if let Some(text) = to_text(&source) {
                proptest::prop_assert!(text.ends_with('\n'));
            }
        }

        #[test]
        fn arbitrary_unicode_never_panics(source in "\\PC{0,200}") {
            let _ = to_text(&source);
            let _ = unescape(&source);
        }
    }
}
