//! Just enough PromQL reading to find the series selectors of a query: the metric names and
//! their label matchers. Not a parser: promtool checks the syntax; this finds names so they can
//! be checked against what the gateway registers.

/// `metric{label op "value", …}` as written in a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) metric: String,
    /// (label, operator, value)
    pub(crate) matchers: Vec<(String, String, String)>,
}

/// Words that are never metric names: aggregations (which may put `by (…)` before their
/// parenthesis) and keywords.
const KEYWORDS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "count_values",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "limitk",
    "limit_ratio",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names (never metric names either).
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The series selectors in `expr`, in order.
pub(crate) fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            i = skip_until(&chars, i, ']');
        } else if c == '{' {
            // A selector without a metric name (`{__name__=…}`): not used here.
            i = skip_until(&chars, i, '}');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1; // numbers, durations, 1e3
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) && chars.get(next) == Some(&'(') {
                i = skip_until(&chars, next, ')');
            } else if KEYWORDS.contains(&lower.as_str())
                || LABEL_LISTS.contains(&lower.as_str())
                || chars.get(next) == Some(&'(')
            {
                // a keyword, or a function or aggregation being called
            } else if chars.get(next) == Some(&'{') {
                let end = skip_until(&chars, next, '}');
                let inside: String = chars[next + 1..end.saturating_sub(1)].iter().collect();
                found.push(Selector {
                    metric: word,
                    matchers: matchers(&inside),
                });
                i = end;
            } else {
                found.push(Selector {
                    metric: word,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Index just past the string starting at `start` (backslash escapes honoured).
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Index just past the `close` matching the opener at `start`, skipping strings.
fn skip_until(chars: &[char], start: usize, close: char) -> usize {
    let open = chars[start];
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// `label op "value"` pairs of a matcher list.
fn matchers(inside: &str) -> Vec<(String, String, String)> {
    let chars: Vec<char> = inside.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if label.is_empty() || op.is_empty() || !matches!(chars.get(i), Some('"' | '\'')) {
            break;
        }
        let end = skip_string(&chars, i);
        let raw: String = chars[i + 1..end.saturating_sub(1)].iter().collect();
        out.push((label, op, raw.replace("\\\"", "\"")));
        i = end;
    }
    out
}

#[test]
fn selectors_are_found_outside_strings_ranges_and_label_lists() {
    let found = selectors(
        r#"sum by (le, imgate_not_a_metric) (rate(imgate_x_bucket{event="push_y", a=~"imgate_\"z"}[5m])) / on(instance) up > 0.5 * imgat_typo"#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["imgate_x_bucket", "up", "imgat_typo"]);
    assert_eq!(
        found[0].matchers,
        [
            ("event".into(), "=".into(), "push_y".into()),
            ("a".into(), "=~".into(), "imgate_\"z".into()),
        ]
    );
}
