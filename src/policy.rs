//! The authorization decision (README "Configuration reference", rules): a pure function
//! of the configured rules, the call and the verified identity.

use serde_json::Value;

use crate::condition::{EvalError, Facts, Scope};
use crate::config::{is_scope_token, Effect, Rule, OFFLINE_ACCESS};
use crate::identity::Identity;
use crate::mcp::{Body, Message};

/// What the rules say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through. `rule` is the allow rule that decided; `None` for a
    /// JSON-RPC response, which needs no rule.
    Allow { rule: Option<String> },
    /// Refuse it (403). `rule` is the deny rule that decided; `None` when no
    /// rule allowed it (default deny).
    Forbidden { rule: Option<String> },
    /// Refuse it with a scope challenge (403 `insufficient_scope`): the
    /// caller has the roles of the allow rule `rule` but not all its
    /// `scopes`, which are the ones to ask for.
    NeedScopes { rule: String, scopes: Vec<String> },
}

impl Decision {
    /// Whether the request may go through.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// A call as the rules see it: what the body says, and what conditions
/// may look at besides.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a str,
    pub name: Option<&'a str>,
    pub arguments: Arguments<'a>,
    /// Request headers (names lower-case), for conditions.
    pub headers: &'a [(String, String)],
    pub now_s: u64,
}

/// A call's arguments as far as they are known.
#[derive(Debug, Clone, Copy)]
pub enum Arguments<'a> {
    /// The call's `params.arguments` (`None`: it has none).
    Known(Option<&'a Value>),
    /// A list being filtered: the item is judged for a call with arguments
    /// not yet known.
    Unknown,
}

impl<'a> Call<'a> {
    /// A call with nothing but a method and a name (for tests and tools).
    pub fn plain(method: &'a str, name: Option<&'a str>) -> Call<'a> {
        Call {
            method,
            name,
            arguments: Arguments::Known(None),
            headers: &[],
            now_s: 0,
        }
    }
}

/// Decides one call. A rule takes part when its `methods` (and `names`)
/// match and its `when` condition, if any, holds. A deny rule that takes
/// part and that the caller satisfies wins wherever it stands; otherwise the
/// first satisfied allow rule allows; otherwise, if some allow rule failed
/// only for want of scopes, the first such rule's scopes are challenged for,
/// together with the scopes the caller holds (one re-authorization then
/// keeps what it could do before); otherwise deny. A condition that cannot
/// be evaluated counts against the caller (false for an allow rule, true for
/// a deny rule) and its rule's name goes to `errors`.
pub fn decide(
    rules: &[Rule],
    call: &Call,
    identity: &Identity,
    errors: &mut Vec<String>,
) -> Decision {
    match judge(rules, call, identity, errors) {
        Verdict::Allowed(rule) => Decision::Allow {
            rule: Some(rule.name.clone()),
        },
        Verdict::Denied(rule) => Decision::Forbidden {
            rule: Some(rule.name.clone()),
        },
        Verdict::ShortOfScopes(rule) => {
            // The rule's whole list, and what the caller holds: the client
            // re-authorizes and the new token must carry all of them. A held
            // "scope" that is no scope token (a quote, a backslash, a control
            // character, non-ASCII) would break the challenge's quoted `scope`
            // or the header itself: it is left out.
            let held = identity.scopes.iter().filter(|s| is_scope_token(s));
            let mut scopes: Vec<String> = Vec::new();
            for scope in rule.scopes.iter().flatten().chain(held) {
                if scope != OFFLINE_ACCESS && !scopes.contains(scope) {
                    scopes.push(scope.clone());
                }
            }
            Decision::NeedScopes {
                rule: rule.name.clone(),
                scopes,
            }
        }
        Verdict::NoRule => Decision::Forbidden { rule: None },
    }
}

/// [`decide`]'s outcome before anything is copied out of the rules.
enum Verdict<'r> {
    Allowed(&'r Rule),
    Denied(&'r Rule),
    ShortOfScopes(&'r Rule),
    NoRule,
}

fn judge<'r>(
    rules: &'r [Rule],
    call: &Call,
    identity: &Identity,
    errors: &mut Vec<String>,
) -> Verdict<'r> {
    let mut allowed_by: Option<&Rule> = None;
    let mut short_of_scopes: Option<&Rule> = None;
    // What conditions see: one set of variables for the whole call. For a
    // list (arguments unknown) only conditions that do not read them are
    // evaluated, with no arguments.
    let arguments = match call.arguments {
        Arguments::Known(arguments) => arguments,
        Arguments::Unknown => None,
    };
    let facts = facts(call, arguments, identity);
    let scope = Scope::new(&facts);
    for rule in rules
        .iter()
        .filter(|rule| matches(rule, call.method, call.name))
    {
        let (has_role, has_scopes) = satisfies(rule, identity);
        let relevant = match rule.effect {
            Effect::Deny => has_role && has_scopes,
            // Once one allow rule allows, or one is short of scopes, later
            // ones of that kind cannot change the decision.
            Effect::Allow if has_scopes => has_role && allowed_by.is_none(),
            Effect::Allow => has_role && allowed_by.is_none() && short_of_scopes.is_none(),
        };
        if !relevant || !condition_holds(rule, call, &scope, errors) {
            continue;
        }
        match rule.effect {
            Effect::Deny => return Verdict::Denied(rule),
            Effect::Allow if has_scopes => {
                allowed_by.get_or_insert(rule);
            }
            Effect::Allow => {
                short_of_scopes.get_or_insert(rule);
            }
        }
    }
    match (allowed_by, short_of_scopes) {
        (Some(rule), _) => Verdict::Allowed(rule),
        (None, Some(rule)) => Verdict::ShortOfScopes(rule),
        (None, None) => Verdict::NoRule,
    }
}

/// Whether a rule's `when` condition holds for the call.
fn condition_holds(rule: &Rule, call: &Call, scope: &Scope, errors: &mut Vec<String>) -> bool {
    let Some(condition) = &rule.when else {
        return true;
    };
    // A list: the item stays when some call to it could be allowed, and a
    // deny rule hides it only when it denies whatever the arguments.
    if matches!(call.arguments, Arguments::Unknown) && condition.uses_arguments() {
        return rule.effect == Effect::Allow;
    }
    match condition.eval_in(scope) {
        Ok(holds) => holds,
        Err(_) => {
            errors.push(rule.name.clone());
            rule.effect == Effect::Deny
        }
    }
}

/// What a condition sees of a call.
fn facts<'a>(call: &Call<'a>, arguments: Option<&'a Value>, identity: &'a Identity) -> Facts<'a> {
    Facts {
        method: call.method,
        name: call.name,
        arguments,
        headers: call.headers,
        identity,
        now_s: call.now_s,
    }
}

/// Decides a whole body. Responses need no rule. A batch passes only if every
/// element is allowed: the first forbidden element decides; else, if any
/// element needs scopes, the challenge names the first such rule and asks for
/// the union of all needed scopes (first-seen order), so one re-authorization
/// covers the batch; else the first element's decision stands.
pub fn decide_body(
    rules: &[Rule],
    body: &Body,
    identity: &Identity,
    headers: &[(String, String)],
    now_s: u64,
    errors: &mut Vec<String>,
) -> Decision {
    let mut first: Option<Decision> = None;
    let mut challenge: Option<(String, Vec<String>)> = None;
    for message in body.messages() {
        let decision = match message {
            Message::Response { .. } => Decision::Allow { rule: None },
            Message::Call(call) => {
                let call = Call {
                    method: &call.method,
                    name: call.name.as_deref(),
                    arguments: Arguments::Known(call.arguments.as_ref()),
                    headers,
                    now_s,
                };
                decide(rules, &call, identity, errors)
            }
        };
        match &decision {
            Decision::Forbidden { .. } => return decision,
            Decision::NeedScopes { rule, scopes } => {
                let (_, needed) = challenge.get_or_insert_with(|| (rule.clone(), Vec::new()));
                for scope in scopes {
                    if !needed.contains(scope) {
                        needed.push(scope.clone());
                    }
                }
            }
            Decision::Allow { .. } => {}
        }
        first.get_or_insert(decision);
    }
    if let Some((rule, scopes)) = challenge {
        return Decision::NeedScopes { rule, scopes };
    }
    // A body always holds at least one message; the fallback is unreachable
    // but denies rather than allows.
    first.unwrap_or(Decision::Forbidden { rule: None })
}

/// Whether the caller may make some call to a listed item, whatever its
/// arguments: used to filter list results. As for a call, a condition that
/// cannot be evaluated counts against the caller and its rule's name goes to
/// `errors`.
pub fn may_call(
    rules: &[Rule],
    method: &str,
    name: &str,
    identity: &Identity,
    headers: &[(String, String)],
    now_s: u64,
    errors: &mut Vec<String>,
) -> bool {
    let call = Call {
        method,
        name: Some(name),
        arguments: Arguments::Unknown,
        headers,
        now_s,
    };
    // Asked once per listed item: nothing is copied out of the rules (a
    // rule's name only when its condition could not be evaluated).
    matches!(judge(rules, &call, identity, errors), Verdict::Allowed(_))
}

/// How one rule stands towards one call, for explaining a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub rule: String,
    pub effect: Effect,
    /// The rule's `methods` (and `names`, if any) match the call.
    pub matched: bool,
    /// The caller holds one of the rule's `roles` (or it names none).
    pub has_role: bool,
    /// The caller holds all the rule's `scopes` (or it names none).
    pub has_scopes: bool,
    /// The rule's `scopes` the caller lacks, for the explanation.
    pub missing_scopes: Vec<String>,
    /// The rule's condition and what it gave, when it has one and matched.
    pub condition: Option<(String, Result<bool, EvalError>)>,
}

impl RuleTrace {
    /// The caller satisfies the rule (roles, all scopes, its condition).
    pub fn satisfied(&self) -> bool {
        self.has_role
            && self.has_scopes
            && self
                .condition
                .as_ref()
                .is_none_or(|(_, value)| *value == Ok(true))
    }
}

/// Every rule, in configuration order, with whether it matches the call and
/// whether the caller satisfies it: the same tests [`decide`] applies.
pub fn trace(rules: &[Rule], call: &Call, identity: &Identity) -> Vec<RuleTrace> {
    rules
        .iter()
        .map(|rule| {
            let (has_role, has_scopes) = satisfies(rule, identity);
            let matched = matches(rule, call.method, call.name);
            let condition = match (&rule.when, matched, call.arguments) {
                (Some(condition), true, Arguments::Known(arguments)) => Some((
                    condition.source().to_string(),
                    condition.eval(&facts(call, arguments, identity)),
                )),
                _ => None,
            };
            RuleTrace {
                rule: rule.name.clone(),
                effect: rule.effect,
                matched,
                has_role,
                has_scopes,
                missing_scopes: rule
                    .scopes
                    .iter()
                    .flatten()
                    .filter(|scope| !identity.has_scope(scope))
                    .cloned()
                    .collect(),
                condition,
            }
        })
        .collect()
}

/// Whether the caller holds one of the rule's roles (if it names any), and
/// all of its scopes (if it names any).
fn satisfies(rule: &Rule, identity: &Identity) -> (bool, bool) {
    let has_role = rule
        .roles
        .as_ref()
        .is_none_or(|roles| roles.iter().any(|role| identity.has_role(role)));
    let has_scopes = rule
        .scopes
        .as_ref()
        .is_none_or(|scopes| scopes.iter().all(|scope| identity.has_scope(scope)));
    (has_role, has_scopes)
}

/// Whether `rule` matches the call. A rule with `names` never matches a call
/// without one.
fn matches(rule: &Rule, method: &str, name: Option<&str>) -> bool {
    if !rule.methods.iter().any(|glob| glob.matches(method)) {
        return false;
    }
    match (&rule.names, name) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(globs), Some(name)) => globs.iter().any(|glob| glob.matches(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::Glob;
    use crate::mcp::parse_body;

    fn globs(patterns: &[&str]) -> Vec<Glob> {
        patterns.iter().map(|p| Glob::parse(p).unwrap()).collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn rule(
        name: &str,
        effect: Effect,
        methods: &[&str],
        names: Option<&[&str]>,
        roles: Option<&[&str]>,
        scopes: Option<&[&str]>,
    ) -> Rule {
        Rule {
            name: name.to_string(),
            effect,
            methods: globs(methods),
            names: names.map(globs),
            roles: roles.map(strings),
            scopes: scopes.map(strings),
            when: None,
        }
    }

    /// The example rules of the README's configuration reference.
    fn readme_rules() -> Vec<Rule> {
        vec![
            rule(
                "everyone lists",
                Effect::Allow,
                &[
                    "initialize",
                    "server/discover",
                    "notifications/*",
                    "ping",
                    "tools/list",
                    "prompts/list",
                    "resources/list",
                ],
                None,
                None,
                None,
            ),
            rule(
                "readers read",
                Effect::Allow,
                &["tools/call"],
                Some(&["get_*", "search"]),
                Some(&["reader", "admin"]),
                Some(&["mcp:read"]),
            ),
            rule(
                "admins write",
                Effect::Allow,
                &["tools/call"],
                Some(&["*"]),
                Some(&["admin"]),
                Some(&["mcp:write"]),
            ),
            rule(
                "nobody deletes",
                Effect::Deny,
                &["tools/call"],
                Some(&["delete_*"]),
                None,
                None,
            ),
        ]
    }

    fn identity(roles: &[&str], scopes: &[&str]) -> Identity {
        let mut identity = Identity::anonymous("https://idp.example.com");
        identity.roles = strings(roles);
        identity.scopes = strings(scopes);
        identity
    }

    fn allow(rule: &str) -> Decision {
        Decision::Allow {
            rule: Some(rule.to_string()),
        }
    }

    fn forbidden(rule: Option<&str>) -> Decision {
        Decision::Forbidden {
            rule: rule.map(str::to_string),
        }
    }

    fn need(rule: &str, scopes: &[&str]) -> Decision {
        Decision::NeedScopes {
            rule: rule.to_string(),
            scopes: strings(scopes),
        }
    }

    #[test]
    fn contract_example_rules_decide_as_documented() {
        let rules = readme_rules();
        let all = ["mcp:read", "mcp:write"];
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &[&str], &[&str], &str, Option<&str>, Decision)] = &[
            (
                "reader reads",
                &["reader"],
                &["mcp:read"],
                "tools/call",
                Some("get_x"),
                allow("readers read"),
            ),
            (
                "reader searches",
                &["reader"],
                &["mcp:read"],
                "tools/call",
                Some("search"),
                allow("readers read"),
            ),
            (
                "search is literal",
                &["reader"],
                &["mcp:read"],
                "tools/call",
                Some("search2"),
                forbidden(None),
            ),
            (
                "reader without mcp:read",
                &["reader"],
                &[],
                "tools/call",
                Some("get_x"),
                need("readers read", &["mcp:read"]),
            ),
            (
                "reader writes",
                &["reader"],
                &all,
                "tools/call",
                Some("set_x"),
                forbidden(None),
            ),
            (
                "admin writes",
                &["admin"],
                &all,
                "tools/call",
                Some("set_x"),
                allow("admins write"),
            ),
            (
                "admin without mcp:write: the challenge keeps what it holds",
                &["admin"],
                &["mcp:read"],
                "tools/call",
                Some("set_x"),
                need("admins write", &["mcp:write", "mcp:read"]),
            ),
            (
                "held scopes that are no scope tokens stay out of the challenge",
                &["admin"],
                &[
                    "mcp:read",
                    "a\"b",
                    "a\\b",
                    "a\u{1}b",
                    "a\u{0}b",
                    "\u{fc}ber",
                    "offline_access",
                ],
                "tools/call",
                Some("set_x"),
                need("admins write", &["mcp:write", "mcp:read"]),
            ),
            (
                "admin with no scopes: first rule in order is asked for",
                &["admin"],
                &[],
                "tools/call",
                Some("get_x"),
                need("readers read", &["mcp:read"]),
            ),
            (
                "admin with mcp:write only reads via the write rule",
                &["admin"],
                &["mcp:write"],
                "tools/call",
                Some("get_x"),
                allow("admins write"),
            ),
            (
                "admin deletes",
                &["admin"],
                &all,
                "tools/call",
                Some("delete_x"),
                forbidden(Some("nobody deletes")),
            ),
            (
                "nobody deletes",
                &[],
                &[],
                "tools/call",
                Some("delete_x"),
                forbidden(Some("nobody deletes")),
            ),
            (
                "no roles lists",
                &[],
                &[],
                "tools/list",
                None,
                allow("everyone lists"),
            ),
            (
                "no roles initializes",
                &[],
                &[],
                "initialize",
                None,
                allow("everyone lists"),
            ),
            (
                "no roles discovers",
                &[],
                &[],
                "server/discover",
                None,
                allow("everyone lists"),
            ),
            (
                "notifications glob",
                &[],
                &[],
                "notifications/initialized",
                None,
                allow("everyone lists"),
            ),
            (
                "no roles calls",
                &[],
                &all,
                "tools/call",
                Some("get_x"),
                forbidden(None),
            ),
            (
                "unknown method",
                &["admin"],
                &all,
                "tools/delete",
                None,
                forbidden(None),
            ),
            (
                "tools/call without a name",
                &["admin"],
                &all,
                "tools/call",
                None,
                forbidden(None),
            ),
            (
                "method is case-sensitive",
                &[],
                &[],
                "Tools/List",
                None,
                forbidden(None),
            ),
            (
                "resources/read has no rule",
                &["admin"],
                &all,
                "resources/read",
                Some("file:///x"),
                forbidden(None),
            ),
        ];
        for (what, roles, scopes, method, name, expected) in cases {
            let got = decide(
                &rules,
                &Call::plain(method, *name),
                &identity(roles, scopes),
                &mut Vec::new(),
            );
            assert_eq!(&got, expected, "{what}");
        }
    }

    #[test]
    fn rule_shapes_decide_as_documented() {
        let deny_last = vec![
            rule("allow all", Effect::Allow, &["*"], None, None, None),
            rule(
                "deny secrets",
                Effect::Deny,
                &["tools/call"],
                Some(&["secret_?"]),
                None,
                None,
            ),
        ];
        let deny_for_role = vec![
            rule("allow all", Effect::Allow, &["*"], None, None, None),
            rule(
                "guests may not call",
                Effect::Deny,
                &["tools/call"],
                None,
                Some(&["guest"]),
                None,
            ),
        ];
        let deny_needs_scope = vec![
            rule("allow all", Effect::Allow, &["*"], None, None, None),
            rule(
                "deny with scope",
                Effect::Deny,
                &["*"],
                None,
                None,
                Some(&["mcp:limited"]),
            ),
        ];
        let named_rule = vec![rule(
            "named",
            Effect::Allow,
            &["custom/*"],
            Some(&["*"]),
            None,
            None,
        )];
        let two_challenges = vec![
            rule(
                "wrong role",
                Effect::Allow,
                &["tools/call"],
                None,
                Some(&["other"]),
                Some(&["x:1"]),
            ),
            rule(
                "first",
                Effect::Allow,
                &["tools/call"],
                None,
                None,
                Some(&["a", "b"]),
            ),
            rule(
                "second",
                Effect::Allow,
                &["tools/call"],
                None,
                Some(&["r"]),
                Some(&["a"]),
            ),
        ];
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &str,
            &[Rule],
            &[&str],
            &[&str],
            &str,
            Option<&str>,
            Decision,
        )] = &[
            (
                "deny listed last still wins",
                &deny_last,
                &[],
                &[],
                "tools/call",
                Some("secret_1"),
                forbidden(Some("deny secrets")),
            ),
            (
                "? is one character",
                &deny_last,
                &[],
                &[],
                "tools/call",
                Some("secret_12"),
                allow("allow all"),
            ),
            (
                "? needs a character",
                &deny_last,
                &[],
                &[],
                "tools/call",
                Some("secret_"),
                allow("allow all"),
            ),
            (
                "deny with names skips a nameless call",
                &deny_last,
                &[],
                &[],
                "tools/call",
                None,
                allow("allow all"),
            ),
            (
                "deny applies to its role",
                &deny_for_role,
                &["guest"],
                &[],
                "tools/call",
                Some("x"),
                forbidden(Some("guests may not call")),
            ),
            (
                "deny skips other roles",
                &deny_for_role,
                &["user"],
                &[],
                "tools/call",
                Some("x"),
                allow("allow all"),
            ),
            (
                "deny needs all its scopes",
                &deny_needs_scope,
                &[],
                &[],
                "ping",
                None,
                allow("allow all"),
            ),
            (
                "deny with its scopes",
                &deny_needs_scope,
                &[],
                &["mcp:limited"],
                "ping",
                None,
                forbidden(Some("deny with scope")),
            ),
            (
                "rule with names vs call without name",
                &named_rule,
                &[],
                &[],
                "custom/op",
                None,
                forbidden(None),
            ),
            (
                "rule with names vs call with name",
                &named_rule,
                &[],
                &[],
                "custom/op",
                Some(""),
                allow("named"),
            ),
            (
                "no rules at all",
                &[],
                &["admin"],
                &["mcp:write"],
                "ping",
                None,
                forbidden(None),
            ),
            (
                "challenge names the first role-satisfied rule, all its scopes",
                &two_challenges,
                &["r"],
                &[],
                "tools/call",
                Some("t"),
                need("first", &["a", "b"]),
            ),
            (
                "a later satisfied allow beats an earlier challenge",
                &two_challenges,
                &["r"],
                &["a"],
                "tools/call",
                Some("t"),
                allow("second"),
            ),
            (
                "partial scopes still ask for the rule's whole list",
                &two_challenges,
                &[],
                &["b"],
                "tools/call",
                Some("t"),
                need("first", &["a", "b"]),
            ),
            (
                "wrong role alone is no challenge",
                &two_challenges[..1],
                &[],
                &[],
                "tools/call",
                Some("t"),
                forbidden(None),
            ),
        ];
        for (what, rules, roles, scopes, method, name, expected) in cases {
            let got = decide(
                rules,
                &Call::plain(method, *name),
                &identity(roles, scopes),
                &mut Vec::new(),
            );
            assert_eq!(&got, expected, "{what}");
        }
    }

    #[test]
    fn first_satisfied_allow_rule_decides_even_if_an_earlier_one_needs_scopes() {
        let rules = vec![
            rule(
                "scoped",
                Effect::Allow,
                &["tools/call"],
                None,
                None,
                Some(&["s"]),
            ),
            rule("open", Effect::Allow, &["tools/call"], None, None, None),
        ];
        assert_eq!(
            decide(
                &rules,
                &Call::plain("tools/call", Some("t")),
                &identity(&[], &[]),
                &mut Vec::new()
            ),
            allow("open")
        );
        assert_eq!(
            decide(
                &rules,
                &Call::plain("tools/call", Some("t")),
                &identity(&[], &["s"]),
                &mut Vec::new()
            ),
            allow("scoped")
        );
    }

    #[test]
    fn bodies_are_decided_message_by_message() {
        let rules = readme_rules();
        let reader = identity(&["reader"], &["mcp:read"]);
        let admin_no_scopes = identity(&["admin"], &[]);
        let cases: &[(&str, &str, &Identity, Decision)] = &[
            (
                "single allowed call",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x"}}"#,
                &reader,
                allow("readers read"),
            ),
            (
                "response needs no rule",
                r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                &reader,
                Decision::Allow { rule: None },
            ),
            (
                "batch smuggling a forbidden later element",
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_x"}}]"#,
                &reader,
                forbidden(Some("nobody deletes")),
            ),
            (
                "batch with a default-denied element",
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"set_x"}}]"#,
                &reader,
                forbidden(None),
            ),
            (
                "forbidden beats a need for scopes",
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"set_x"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_x"}}]"#,
                &admin_no_scopes,
                forbidden(Some("nobody deletes")),
            ),
            (
                "batch allowed + need scopes asks for the union",
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_x"}},{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"set_x"}},{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"search"}}]"#,
                &admin_no_scopes,
                need("readers read", &["mcp:read", "mcp:write"]),
            ),
            (
                "batch all allowed takes the first element's rule",
                r#"[{"jsonrpc":"2.0","id":"r","result":{}},{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_x"}}]"#,
                &reader,
                Decision::Allow { rule: None },
            ),
            (
                "batch of initialize and tools/list",
                r#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
                &reader,
                allow("everyone lists"),
            ),
            (
                "escaped method is the same method",
                r#"{"jsonrpc":"2.0","id":1,"method":"\u0074ools\/call","params":{"name":"delete_x"}}"#,
                &reader,
                forbidden(Some("nobody deletes")),
            ),
        ];
        for (what, body, identity, expected) in cases {
            let body = parse_body(body.as_bytes()).unwrap();
            assert_eq!(
                &decide_body(&rules, &body, identity, &[], 0, &mut Vec::new()),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn trace_reports_match_and_satisfaction_per_rule() {
        let rules = readme_rules();
        let reader = identity(&["reader"], &["mcp:read"]);
        let got: Vec<(bool, bool, bool, Vec<String>)> =
            trace(&rules, &Call::plain("tools/call", Some("get_x")), &reader)
                .into_iter()
                .map(|t| (t.matched, t.has_role, t.satisfied(), t.missing_scopes))
                .collect();
        assert_eq!(
            got,
            vec![
                (false, true, true, vec![]),
                (true, true, true, vec![]),
                (true, false, false, strings(&["mcp:write"])),
                (false, true, true, vec![]),
            ]
        );
    }

    /// Whether a list shows the item to `identity` (no condition errors
    /// expected).
    fn may_list(rules: &[Rule], method: &str, name: &str, identity: &Identity) -> bool {
        let mut errors = Vec::new();
        let listed = may_call(rules, method, name, identity, &[], 0, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        listed
    }

    #[test]
    fn may_call_filters_lists() {
        let rules = readme_rules();
        let reader = identity(&["reader"], &["mcp:read"]);
        assert!(may_list(&rules, "tools/call", "get_x", &reader));
        assert!(!may_list(&rules, "tools/call", "set_x", &reader));
        assert!(!may_list(
            &rules,
            "tools/call",
            "get_x",
            &identity(&["reader"], &[])
        ));
        assert!(!may_list(
            &rules,
            "tools/call",
            "delete_x",
            &identity(&["admin"], &["mcp:read", "mcp:write"])
        ));
        assert!(!may_list(&rules, "prompts/get", "p", &reader));
    }

    fn when(mut rule: Rule, source: &str) -> Rule {
        rule.when = Some(crate::condition::Condition::compile(source).expect(source));
        rule
    }

    fn with_arguments<'a>(method: &'a str, name: &'a str, arguments: &'a Value) -> Call<'a> {
        Call {
            method,
            name: Some(name),
            arguments: Arguments::Known(Some(arguments)),
            headers: &[],
            now_s: 0,
        }
    }

    /// Anyone may transfer less than 100.
    fn small_transfers() -> Rule {
        when(
            rule(
                "small transfers",
                Effect::Allow,
                &["tools/call"],
                Some(&["transfer"]),
                None,
                None,
            ),
            "request.arguments.amount < 100",
        )
    }

    #[test]
    fn a_condition_limits_an_allow_rule_to_the_calls_it_holds_for() {
        let rules = vec![small_transfers()];
        let caller = identity(&[], &[]);
        let small = serde_json::json!({"amount": 50});
        let big = serde_json::json!({"amount": 500});
        let mut errors = Vec::new();
        assert_eq!(
            decide(
                &rules,
                &with_arguments("tools/call", "transfer", &small),
                &caller,
                &mut errors
            ),
            allow("small transfers")
        );
        assert_eq!(
            decide(
                &rules,
                &with_arguments("tools/call", "transfer", &big),
                &caller,
                &mut errors
            ),
            Decision::Forbidden { rule: None }
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_counts_against_the_caller() {
        let rules = vec![
            when(
                rule(
                    "allow small",
                    Effect::Allow,
                    &["tools/call"],
                    None,
                    None,
                    None,
                ),
                "request.arguments.amount < 100",
            ),
            when(
                rule(
                    "deny other tenants",
                    Effect::Deny,
                    &["tools/call"],
                    None,
                    None,
                    None,
                ),
                "request.arguments.tenant != token.claims.tenant",
            ),
        ];
        let caller = identity(&[], &[]);
        // `amount` is missing (the allow rule fails) and so is `tenant` (the
        // deny rule fails, which denies).
        let args = serde_json::json!({"other": 1});
        let mut errors = Vec::new();
        assert_eq!(
            decide(
                &rules,
                &with_arguments("tools/call", "t", &args),
                &caller,
                &mut errors
            ),
            Decision::Forbidden {
                rule: Some("deny other tenants".into())
            }
        );
        assert_eq!(
            errors,
            vec!["allow small".to_string(), "deny other tenants".to_string()]
        );
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_for_a_list_counts_against_the_caller_and_is_noted() {
        let tenant_only = |effect, name: &str, source| {
            when(
                rule(name, effect, &["tools/call"], Some(&["query"]), None, None),
                source,
            )
        };
        // The caller's token has no `tenant` claim: neither condition can be
        // evaluated. The allow rule does not allow, the deny rule denies.
        let caller = identity(&["reader"], &[]);
        for (rules, failed) in [
            (
                vec![tenant_only(
                    Effect::Allow,
                    "acme only",
                    "token.claims.tenant == 'acme'",
                )],
                "acme only",
            ),
            (
                vec![
                    rule("all", Effect::Allow, &["tools/call"], None, None, None),
                    tenant_only(Effect::Deny, "no globex", "token.claims.tenant == 'globex'"),
                ],
                "no globex",
            ),
        ] {
            let mut errors = Vec::new();
            assert!(!may_call(
                &rules,
                "tools/call",
                "query",
                &caller,
                &[],
                0,
                &mut errors
            ));
            assert_eq!(errors, vec![failed.to_string()]);
        }
        // A condition on the arguments is not evaluated for a list: no error.
        let mut errors = Vec::new();
        let rules = vec![small_transfers()];
        assert!(may_call(
            &rules,
            "tools/call",
            "transfer",
            &identity(&["clerk"], &[]),
            &[],
            0,
            &mut errors
        ));
        assert!(errors.is_empty());
    }

    #[test]
    fn lists_keep_what_some_arguments_could_allow() {
        let rules = vec![
            small_transfers(),
            when(
                rule(
                    "no big",
                    Effect::Deny,
                    &["tools/call"],
                    Some(&["transfer"]),
                    None,
                    None,
                ),
                "request.arguments.amount > 1000",
            ),
            when(
                rule(
                    "admins only",
                    Effect::Allow,
                    &["tools/call"],
                    Some(&["audit"]),
                    None,
                    None,
                ),
                "'admin' in token.roles",
            ),
        ];
        let reader = identity(&["reader"], &[]);
        assert!(may_list(&rules, "tools/call", "transfer", &reader));
        // A condition on the token alone is decided at list time too.
        assert!(!may_list(&rules, "tools/call", "audit", &reader));
        assert!(may_list(
            &rules,
            "tools/call",
            "audit",
            &identity(&["admin"], &[])
        ));
    }

    #[test]
    fn a_challenge_names_the_rule_scopes_and_what_the_caller_holds_never_offline_access() {
        let rules = vec![rule(
            "write",
            Effect::Allow,
            &["tools/call"],
            None,
            None,
            Some(&["mcp:write"]),
        )];
        let caller = identity(&[], &["mcp:read", "offline_access", "profile"]);
        assert_eq!(
            decide(
                &rules,
                &Call::plain("tools/call", Some("x")),
                &caller,
                &mut Vec::new()
            ),
            need("write", &["mcp:write", "mcp:read", "profile"])
        );
    }

    #[test]
    fn a_broad_scope_stands_in_for_the_narrow_ones_it_implies() {
        let rules = vec![rule(
            "read",
            Effect::Allow,
            &["tools/call"],
            None,
            None,
            Some(&["mcp:read"]),
        )];
        let mut caller = identity(&[], &["mcp:admin"]);
        assert!(!decide(
            &rules,
            &Call::plain("tools/call", Some("x")),
            &caller,
            &mut Vec::new()
        )
        .is_allow());
        caller.implied_scopes = vec!["mcp:write".into(), "mcp:read".into()];
        assert!(decide(
            &rules,
            &Call::plain("tools/call", Some("x")),
            &caller,
            &mut Vec::new()
        )
        .is_allow());
    }
}
