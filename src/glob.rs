//! Glob patterns for rule `methods` and `names`: `*` matches any run of
//! characters (including none), `?` exactly one character, everything else is
//! literal and case-sensitive. No character classes, no escapes: MCP method and
//! tool names never need them, and fewer features mean fewer surprises.

/// A validated glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    source: String,
    shape: Shape,
}

/// What most patterns are, matched without walking the pattern: rules name
/// methods and tools plainly or by a prefix, and a list filter asks once
/// per listed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No `*` nor `?`: the text itself.
    Literal,
    /// Only a last `*`: any text starting with the rest.
    Prefix,
    General,
}

impl Glob {
    /// Parses a pattern. An empty pattern, or one holding control characters
    /// (which no JSON-RPC method, tool name or URI the filter compares can
    /// carry unescaped), can never match anything and is refused.
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty glob can never match".to_string());
        }
        if pattern.chars().any(char::is_control) {
            return Err(format!(
                "glob {pattern:?} holds a control character and can never match"
            ));
        }
        let wild = |c: char| c == '*' || c == '?';
        let shape = match pattern.strip_suffix('*') {
            _ if !pattern.contains(wild) => Shape::Literal,
            Some(prefix) if !prefix.contains(wild) => Shape::Prefix,
            _ => Shape::General,
        };
        Ok(Glob {
            pattern: pattern.chars().collect(),
            source: pattern.to_string(),
            shape,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` matches the whole pattern. Nothing is allocated: a
    /// list filter asks once per listed item.
    pub fn matches(&self, text: &str) -> bool {
        match self.shape {
            Shape::Literal => return text == self.source,
            Shape::Prefix => {
                let prefix = self.source.get(..self.source.len() - 1).unwrap_or_default();
                return text.starts_with(prefix);
            }
            Shape::General => {}
        }
        // Iterative matcher with single-star backtracking: linear in practice,
        // never exponential, no recursion (the VM's stack is small). `t` is
        // a byte offset into `text`, always at a character boundary.
        let char_at = |t: usize| text.get(t..).and_then(|rest| rest.chars().next());
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = char_at(t) {
            match self.pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some('?') => {
                    p += 1;
                    t += c.len_utf8();
                }
                Some(&literal) if literal == c => {
                    p += 1;
                    t += c.len_utf8();
                }
                _ => match star {
                    Some((sp, st)) => {
                        // The star takes one more character.
                        let taken = char_at(st).map_or(1, char::len_utf8);
                        p = sp + 1;
                        t = st + taken;
                        star = Some((sp, t));
                    }
                    None => return false,
                },
            }
        }
        self.pattern
            .get(p..)
            .unwrap_or_default()
            .iter()
            .all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::parse(p).unwrap().matches(t)
    }

    #[test]
    fn star_matches_any_run() {
        assert!(m("get_*", "get_weather"));
        assert!(m("get_*", "get_"));
        assert!(!m("get_*", "set_weather"));
        assert!(m("*", ""));
        assert!(m("notifications/*", "notifications/initialized"));
        assert!(m("*_admin_*", "x_admin_y"));
        assert!(!m("*_admin_*", "x_admin"));
    }

    #[test]
    fn question_mark_matches_one_character() {
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(!m("a?c", "abbc"));
        assert!(m("?", "é"));
        assert!(m("a?c", "a€c"));
        assert!(m("*é?", "ééé😀"));
        assert!(!m("é?", "é"));
        assert!(m("*😀", "x😀😀"));
    }

    #[test]
    fn literals_are_case_sensitive_and_whole() {
        assert!(m("search", "search"));
        assert!(!m("search", "Search"));
        assert!(!m("search", "search2"));
        assert!(!m("search", "research"));
    }

    #[test]
    fn patterns_that_cannot_match_are_refused() {
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("a\nb").is_err());
    }

    /// The definition, written plainly (exponential, so only for short text).
    fn reference(pattern: &[char], text: &[char]) -> bool {
        match (pattern.split_first(), text.split_first()) {
            (None, _) => text.is_empty(),
            (Some(('*', rest)), _) => {
                reference(rest, text) || (!text.is_empty() && reference(pattern, &text[1..]))
            }
            (Some(_), None) => false,
            (Some((&p, rest)), Some((&t, more))) => (p == '?' || p == t) && reference(rest, more),
        }
    }

    proptest::proptest! {
        #[test]
        fn matching_is_the_definition(
            pattern in "[ab?*é😀]{1,6}",
            text in "[abé😀]{0,8}",
        ) {
            let chars = |s: &str| s.chars().collect::<Vec<char>>();
            proptest::prop_assert_eq!(
                m(&pattern, &text),
                reference(&chars(&pattern), &chars(&text))
            );
        }
    }

    #[test]
    fn many_stars_stay_fast() {
        let p = "*a*a*a*a*a*a*a*a*a*a*b";
        let t = "a".repeat(5000);
        assert!(!m(p, &t));
    }
}
