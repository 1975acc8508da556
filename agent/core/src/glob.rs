//! Glob patterns with Telegraf's (gobwas/glob) syntax: `*`, `?`, `[abc]`, `[!a-z]`, `{a,b}` and
//! `\` escapes; a pattern without meta characters is a literal. Written here rather than
//! pulling in a regex engine: the agent's filters need nothing more, and the agent stays small.

/// A pattern that does not compile (ripgrep globset's `Error { glob, kind }`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob pattern {pattern:?}: {reason}")]
pub struct GlobError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it (`unclosed '['`, …).
    pub reason: String,
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
    separators: Vec<char>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Alt(Vec<Vec<Token>>),
}

impl Glob {
    /// Compiles a pattern where `*` matches any run of characters.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        Self::with_separators(pattern, &[])
    }

    /// Compiles a pattern where `*` and `?` do not cross any of `separators`
    /// (Telegraf's `namepass_separator`).
    pub fn with_separators(pattern: &str, separators: &[char]) -> Result<Glob, GlobError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut pos = 0;
        let error = |reason| GlobError {
            pattern: pattern.to_owned(),
            reason,
        };
        let tokens = parse_seq(&chars, &mut pos, false).map_err(error)?;
        if pos != chars.len() {
            return Err(error(format!("unexpected '{}'", chars[pos])));
        }
        Ok(Glob {
            source: pattern.to_owned(),
            tokens,
            separators: separators.to_vec(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        match_seq(&self.tokens, &chars, &self.separators)
    }
}

fn parse_seq(p: &[char], pos: &mut usize, in_alt: bool) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    while *pos < p.len() {
        let c = p[*pos];
        match c {
            '*' => {
                *pos += 1;
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
            }
            '?' => {
                *pos += 1;
                out.push(Token::Any);
            }
            '\\' => {
                let Some(&next) = p.get(*pos + 1) else {
                    return Err("trailing '\\'".into());
                };
                out.push(Token::Literal(next));
                *pos += 2;
            }
            '[' => out.push(parse_class(p, pos)?),
            '{' => {
                *pos += 1;
                let mut alts = Vec::new();
                loop {
                    alts.push(parse_seq(p, pos, true)?);
                    match p.get(*pos) {
                        Some(',') => *pos += 1,
                        Some('}') => {
                            *pos += 1;
                            break;
                        }
                        _ => return Err("unclosed '{'".into()),
                    }
                }
                out.push(Token::Alt(alts));
            }
            ',' | '}' if in_alt => return Ok(out),
            _ => {
                *pos += 1;
                out.push(Token::Literal(c));
            }
        }
    }
    Ok(out)
}

fn parse_class(p: &[char], pos: &mut usize) -> Result<Token, String> {
    *pos += 1;
    let negated = matches!(p.get(*pos), Some('!') | Some('^'));
    if negated {
        *pos += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let Some(&c) = p.get(*pos) else {
            return Err("unclosed '['".into());
        };
        if c == ']' && !ranges.is_empty() {
            *pos += 1;
            return Ok(Token::Class { negated, ranges });
        }
        if p.get(*pos + 1) == Some(&'-') && p.get(*pos + 2).is_some_and(|e| *e != ']') {
            let end = p[*pos + 2];
            if end < c {
                return Err(format!("bad range {c}-{end}"));
            }
            ranges.push((c, end));
            *pos += 3;
        } else {
            ranges.push((c, c));
            *pos += 1;
        }
    }
}

fn match_seq(tokens: &[Token], s: &[char], seps: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match first {
        Token::Literal(c) => s.first() == Some(c) && match_seq(rest, &s[1..], seps),
        Token::Any => {
            s.first().is_some_and(|c| !seps.contains(c)) && match_seq(rest, &s[1..], seps)
        }
        Token::Class { negated, ranges } => {
            s.first()
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && match_seq(rest, &s[1..], seps)
        }
        Token::Star => {
            for i in 0..=s.len() {
                if match_seq(rest, &s[i..], seps) {
                    return true;
                }
                if i < s.len() && seps.contains(&s[i]) {
                    return false;
                }
            }
            false
        }
        Token::Alt(alts) => alts.iter().any(|alt| {
            let mut joined = alt.clone();
            joined.extend_from_slice(rest);
            match_seq(&joined, s, seps)
        }),
    }
}

/// A list of globs that matches when any of them does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobSet {
    globs: Vec<Glob>,
}

impl GlobSet {
    /// Compiles every pattern; the first bad one is the error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<GlobSet, GlobError> {
        Self::with_separators(patterns, &[])
    }

    /// As [`GlobSet::new`], with separators that `*` does not cross.
    pub fn with_separators<S: AsRef<str>>(
        patterns: &[S],
        seps: &[char],
    ) -> Result<GlobSet, GlobError> {
        let globs = patterns
            .iter()
            .map(|p| Glob::with_separators(p.as_ref(), seps))
            .collect::<Result<_, _>>()?;
        Ok(GlobSet { globs })
    }

    /// True when no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// True when any pattern matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.globs.iter().any(|g| g.is_match(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().is_match(s)
    }

    #[test]
    fn literals_wildcards_classes_and_alternatives() {
        for (pattern, s, want) in [
            ("cpu", "cpu", true),
            ("cpu", "cpu0", false),
            ("cpu*", "cpu0", true),
            ("*", "", true),
            ("c?u", "cpu", true),
            ("c?u", "cu", false),
            ("*/sda*", "/dev/sda1", true),
            ("sd[a-c]", "sdb", true),
            ("sd[!a-c]", "sdb", false),
            ("sd[!a-c]", "sdz", true),
            ("{eth,en}*", "enp0s3", true),
            ("{eth,en}*", "eth0", true),
            ("{eth,en}*", "lo", false),
            ("a{b,c{d,e}}f", "acef", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
        ] {
            assert_eq!(m(pattern, s), want, "{pattern:?} on {s:?}");
        }
    }

    #[test]
    fn separators_stop_star() {
        let g = Glob::with_separators("a.*", &['.']).unwrap();
        assert!(g.is_match("a.b"));
        assert!(!g.is_match("a.b.c"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("{a,b").is_err());
        assert!(Glob::new("a\\").is_err());
        assert!(Glob::new("[z-a]").is_err());
    }
}
