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

/// What most patterns are, told once when the pattern is read: rules name
/// methods and tools plainly or by a prefix (`get_*`), and a list filter
/// asks about every listed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No wildcard: a plain comparison.
    Literal,
    /// One `*`, last: whether the text starts with the rest.
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
        let wild = ['*', '?'];
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

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        // Every rule's globs meet every call: a pattern without wildcards
        // is a plain comparison, a prefix pattern a look at the start, and
        // the general case walks `text` in place (no copy of it per call).
        match self.shape {
            Shape::Literal => return self.source == text,
            Shape::Prefix => {
                let prefix = self.source.get(..self.source.len() - 1);
                return prefix.is_some_and(|prefix| text.starts_with(prefix));
            }
            Shape::General => {}
        }
        // Iterative matcher with single-star backtracking: linear in practice,
        // never exponential, no recursion (the VM's stack is small). `t` and
        // the star's restart point are byte offsets into `text`, always on a
        // character boundary.
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = text[t..].chars().next() {
            match self.pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some('?') => {
                    p += 1;
                    t += c.len_utf8();
                }
                Some(literal) if *literal == c => {
                    p += 1;
                    t += c.len_utf8();
                }
                _ => match star {
                    Some((sp, st)) => {
                        // The star takes one more character of the text.
                        let taken = text[st..].chars().next().map_or(1, char::len_utf8);
                        p = sp + 1;
                        t = st + taken;
                        star = Some((sp, st + taken));
                    }
                    None => return false,
                },
            }
        }
        self.pattern[p..].iter().all(|c| *c == '*')
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

    /// The textbook dynamic programme over characters: what a glob means.
    fn reference(pattern: &str, text: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        // done[j]: the pattern so far matches text[..j].
        let mut done = vec![false; t.len() + 1];
        done[0] = true;
        for c in &p {
            let mut next = vec![false; t.len() + 1];
            for j in 0..=t.len() {
                next[j] = match c {
                    '*' => done[j] || (j > 0 && next[j - 1]),
                    '?' => j > 0 && done[j - 1],
                    c => j > 0 && done[j - 1] && t[j - 1] == *c,
                };
            }
            done = next;
        }
        done[t.len()]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4000))]
        #[test]
        fn the_matcher_agrees_with_the_reference(
            pattern in "[ab*?é_]{1,8}",
            text in "[abé_]{0,10}",
        ) {
            let glob = Glob::parse(&pattern).expect("pattern");
            proptest::prop_assert_eq!(glob.matches(&text), reference(&pattern, &text));
        }
    }

    #[test]
    fn many_stars_stay_fast() {
        let p = "*a*a*a*a*a*a*a*a*a*a*b";
        let t = "a".repeat(5000);
        assert!(!m(p, &t));
    }
}
