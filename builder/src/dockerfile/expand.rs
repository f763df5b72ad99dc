//! Docker's expansion of `$NAME` in a Dockerfile word, for the forms nap can
//! follow with certainty; anything else is [`Unsure`], never a guess.
//!
//! Followed: `$NAME`, `${NAME}`, `${NAME:-WORD}`, `${NAME-WORD}`,
//! `${NAME:+WORD}`, `${NAME+WORD}` (WORD itself expanded). Not followed:
//! quotes and the escape character (Docker removes them), other `${...}`
//! forms, `$1` and the special parameters, and a variable whose value nap
//! cannot know.

use std::iter::Peekable;
use std::str::Chars;

/// The deepest `${NAME:-${…}}` nap follows (it recurses).
const MAX_DEPTH: usize = 16;
/// The longest value nap expands (`ENV A=$A$A` doubles at each line).
const MAX_LENGTH: usize = 64 * 1024;

/// What a variable holds where a word is expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Set(String),
    /// Declared without a value, or never declared: expands to nothing.
    Unset,
    /// Its value depends on something nap does not follow.
    Unknown,
}

/// Why a word's expansion cannot be known for certain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsure {
    #[error("nap does not follow quotes or the escape character in it; write it plainly")]
    Quoting,
    #[error("nap does not follow the expansion form {0}")]
    Form(String),
    #[error("the value of ${0} is not known before the build")]
    Variable(String),
    #[error("its expansion is nested deeper than {MAX_DEPTH} or longer than {} KiB", MAX_LENGTH / 1024)]
    TooLarge,
}

/// `word` with its variables replaced as Docker would, `lookup` telling
/// what each holds. `escape` is the Dockerfile's escape character.
pub(crate) fn expand(word: &str, escape: char, lookup: &dyn Fn(&str) -> Value) -> Result<String, Unsure> {
    let mut chars = word.chars().peekable();
    expand_until(&mut chars, None, escape, lookup, 0)
}

/// Expands up to `stop` (consumed) or the end.
fn expand_until(
    chars: &mut Peekable<Chars<'_>>,
    stop: Option<char>,
    escape: char,
    lookup: &dyn Fn(&str) -> Value,
    depth: usize,
) -> Result<String, Unsure> {
    if depth > MAX_DEPTH {
        return Err(Unsure::TooLarge);
    }
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if out.len() > MAX_LENGTH {
            return Err(Unsure::TooLarge);
        }
        match c {
            _ if Some(c) == stop => return Ok(out),
            '\'' | '"' => return Err(Unsure::Quoting),
            _ if c == escape => return Err(Unsure::Quoting),
            '$' => out.push_str(&dollar(chars, escape, lookup, depth)?),
            _ => out.push(c),
        }
    }
    match stop {
        // `${NAME:-WORD` never closed: Docker refuses it; so does nap.
        Some(_) => Err(Unsure::Form("${ without }".to_owned())),
        None if out.len() > MAX_LENGTH => Err(Unsure::TooLarge),
        None => Ok(out),
    }
}

/// The value of what follows a `$`.
fn dollar(
    chars: &mut Peekable<Chars<'_>>,
    escape: char,
    lookup: &dyn Fn(&str) -> Value,
    depth: usize,
) -> Result<String, Unsure> {
    match chars.peek().copied() {
        Some('{') => {
            chars.next();
            braced(chars, escape, lookup, depth)
        }
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            let name = name(chars);
            // Go's lexer takes any Unicode letter into a name.
            if chars.peek().is_some_and(|c| !c.is_ascii()) {
                return Err(Unsure::Form(format!("${name} followed by a non-ASCII letter")));
            }
            value(&name, lookup)
        }
        Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) || !c.is_ascii() => Err(Unsure::Form(format!("${c}"))),
        // A `$` before anything else is itself.
        _ => Ok("$".to_owned()),
    }
}

/// What follows `${`.
fn braced(
    chars: &mut Peekable<Chars<'_>>,
    escape: char,
    lookup: &dyn Fn(&str) -> Value,
    depth: usize,
) -> Result<String, Unsure> {
    let name = name(chars);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Unsure::Form(format!("${{{name}")));
    }
    let modifier = match chars.next() {
        Some('}') => return value(&name, lookup),
        Some(':') => match chars.next() {
            Some(m @ ('-' | '+')) => (true, m),
            other => return Err(Unsure::Form(format!("${{{name}:{}", other.map(String::from).unwrap_or_default()))),
        },
        Some(m @ ('-' | '+')) => (false, m),
        other => return Err(Unsure::Form(format!("${{{name}{}", other.map(String::from).unwrap_or_default()))),
    };
    let word = expand_until(chars, Some('}'), escape, lookup, depth + 1)?;
    let current = match lookup(&name) {
        Value::Unknown => return Err(Unsure::Variable(name)),
        Value::Set(value) => Some(value),
        Value::Unset => None,
    };
    // With `:`, an empty value counts as unset.
    let current = current.filter(|value| !(modifier.0 && value.is_empty()));
    Ok(match (modifier.1, current) {
        ('-', Some(value)) => value,
        ('-', None) | ('+', Some(_)) => word,
        _ => String::new(),
    })
}

fn name(chars: &mut Peekable<Chars<'_>>) -> String {
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            break;
        }
        name.push(c);
        chars.next();
    }
    name
}

fn value(name: &str, lookup: &dyn Fn(&str) -> Value) -> Result<String, Unsure> {
    match lookup(name) {
        Value::Set(value) => Ok(value),
        Value::Unset => Ok(String::new()),
        Value::Unknown => Err(Unsure::Variable(name.to_owned())),
    }
}

/// Splits an `ARG` or `ENV` line into its words as Docker does: at
/// whitespace outside quotes, an escaped character kept with its word.
/// Quotes stay in the words (their values are then [`Value::Unknown`]).
pub(crate) fn words(text: &str, escape: char) -> Vec<&str> {
    let mut words = Vec::new();
    let (mut start, mut quote, mut escaped) = (None, None, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == escape {
            escaped = true;
        } else if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '"' {
            quote = Some(c);
        } else if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::{Unsure, Value, expand, words};

    fn vars(name: &str) -> Value {
        match name {
            "TAG" => Value::Set("v1".to_owned()),
            "EMPTY" => Value::Set(String::new()),
            "HOST" => Value::Set("127.0.0.1:5000".to_owned()),
            "SECRET" => Value::Unknown,
            _ => Value::Unset,
        }
    }

    fn ex(word: &str) -> Result<String, Unsure> {
        expand(word, '\\', &vars)
    }

    #[test]
    fn follows_the_forms_docker_documents() {
        assert_eq!(ex("nap/busybox").unwrap(), "nap/busybox");
        assert_eq!(ex("$HOST/b:$TAG").unwrap(), "127.0.0.1:5000/b:v1");
        assert_eq!(ex("${HOST}/b:${TAG}x").unwrap(), "127.0.0.1:5000/b:v1x");
        assert_eq!(ex("${NONE:-$HOST/b}").unwrap(), "127.0.0.1:5000/b");
        assert_eq!(ex("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(ex("${EMPTY-d}").unwrap(), "");
        assert_eq!(ex("${NONE-d}").unwrap(), "d");
        assert_eq!(ex("${TAG:+set}").unwrap(), "set");
        assert_eq!(ex("${EMPTY:+set}").unwrap(), "");
        assert_eq!(ex("${EMPTY+set}").unwrap(), "set");
        assert_eq!(ex("${NONE:-${NONE2:-${TAG}}}").unwrap(), "v1");
        assert_eq!(ex("a$/b$").unwrap(), "a$/b$");
        assert_eq!(ex("$NONE").unwrap(), "");
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        assert_eq!(ex("\"nap/b\""), Err(Unsure::Quoting));
        assert_eq!(ex("'x'"), Err(Unsure::Quoting));
        assert_eq!(ex("a\\b"), Err(Unsure::Quoting));
        assert_eq!(ex("$SECRET"), Err(Unsure::Variable("SECRET".to_owned())));
        assert_eq!(ex("${SECRET:-x}"), Err(Unsure::Variable("SECRET".to_owned())));
        assert!(matches!(ex("${TAG%v}"), Err(Unsure::Form(_))));
        assert!(matches!(ex("${TAG:1}"), Err(Unsure::Form(_))));
        assert!(matches!(ex("${TAG"), Err(Unsure::Form(_))));
        assert!(matches!(ex("${TAG:-x"), Err(Unsure::Form(_))));
        assert!(matches!(ex("$1"), Err(Unsure::Form(_))));
        assert!(matches!(ex("$@"), Err(Unsure::Form(_))));
        assert!(matches!(ex("$TAGé"), Err(Unsure::Form(_))));
        assert!(matches!(ex("${}"), Err(Unsure::Form(_))));
        assert_eq!(expand("a`b", '`', &vars), Err(Unsure::Quoting));
        let deep = format!("{}x{}", "${NONE:-".repeat(100_000), "}".repeat(100_000));
        assert_eq!(ex(&deep), Err(Unsure::TooLarge));
        assert_eq!(ex(&format!("{}x{}", "${NONE:-".repeat(16), "}".repeat(16))).unwrap(), "x");
        let long = |name: &str| if name == "L" { Value::Set("x".repeat(40_000)) } else { Value::Unset };
        assert_eq!(expand("$L$L", '\\', &long), Err(Unsure::TooLarge));
    }

    #[test]
    fn splits_words_at_whitespace_outside_quotes() {
        assert_eq!(words("A=1  B=\"x y\" C='p q'\tD", '\\'), vec!["A=1", "B=\"x y\"", "C='p q'", "D"]);
        assert_eq!(words("A=x\\ y B", '\\'), vec!["A=x\\ y", "B"]);
        assert_eq!(words("", '\\'), Vec::<&str>::new());
    }
}
