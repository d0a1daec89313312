//! Rule conditions: a `when` expression in CEL (Common Expression Language)
//! that a rule needs to be true to match. Compiled once when the
//! configuration loads — parsed, its variables and functions checked, its
//! type inferred (`condition/boolean.rs`) and tried on a sample request so
//! an expression that cannot yield a boolean is refused — and evaluated per
//! call against what the filter verified: the body's method, name and
//! arguments, the request headers, the token.
//!
//! The variables (README "Conditions"):
//! `request.method`, `request.name`, `request.arguments`, `request.headers`,
//! `token.claims`, `token.sub`, `token.client_id`, `token.roles`,
//! `token.scopes` (with the scopes they imply), `token.issuer`, `now`
//! (seconds since the Unix epoch).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::IdedExpr;
use cel::objects::{Key, Map};
use cel::parser::PrattParser;
use cel::{Context, Value as Cel};
use serde_json::Value;

use crate::identity::Identity;

mod names;
mod strict;

pub use names::FUNCTIONS;
use names::{check, Reads};
use strict::strict;

/// Deepest nesting of an expression the parser accepts.
const MAX_DEPTH: u16 = 32;

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    expr: Arc<IdedExpr>,
    reads: Reads,
}

/// What a condition is evaluated against.
pub struct Facts<'a> {
    pub method: &'a str,
    pub name: Option<&'a str>,
    /// The call's arguments (`params.arguments`); `None` when the call has
    /// none.
    pub arguments: Option<&'a Value>,
    /// Request headers, names lower-case.
    pub headers: &'a [(String, String)],
    pub identity: &'a Identity,
    pub now_s: u64,
}

/// The facts of one call as CEL sees them: the variables and functions,
/// built on the first condition evaluated and reused by the others (a call
/// may meet several rules with conditions, and converting its arguments is
/// the costly part).
pub struct Scope<'a> {
    facts: &'a Facts<'a>,
    /// `None` once building failed (the functions could not be added).
    context: OnceCell<Option<Context<'static, 'static>>>,
}

impl<'a> Scope<'a> {
    pub fn new(facts: &'a Facts<'a>) -> Scope<'a> {
        Scope {
            facts,
            context: OnceCell::new(),
        }
    }
}

/// The variables and the strict `==`, `!=` and `in` of one call.
fn context_for(facts: &Facts) -> Option<Context<'static, 'static>> {
    let mut context = Context::default();
    if !strict::add_functions(&mut context) {
        return None;
    }
    context.add_variable_from_value("request", request_value(facts));
    context.add_variable_from_value("token", token_value(facts.identity));
    context.add_variable_from_value("now", Cel::Int(clamp(facts.now_s)));
    Some(context)
}

/// Why a condition could not be evaluated to a boolean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// The expression failed (a missing key, a wrong type, …).
    Failed,
    /// It yielded something other than a boolean.
    NotBoolean,
}

impl Condition {
    /// Compiles `source`. Refused: a syntax error, a variable or field that
    /// does not exist (`request.argument`), a function this build lacks, an
    /// expression that cannot yield a boolean whatever the request
    /// (`condition/boolean.rs`) or that yields something else on a sample
    /// request.
    pub fn compile(source: &str) -> Result<Condition, String> {
        let expr = PrattParser::new()
            .max_recursion_depth(MAX_DEPTH)
            .parse(source)
            .map_err(|e| format!("does not parse: {}", first_line(&e.to_string())))?;
        let mut reads = Reads::default();
        check(&expr, &mut Vec::new(), &mut reads)?;
        boolean::check(&expr)?;
        reads.header_names.sort();
        reads.header_names.dedup();
        let mut expr = expr;
        strict(&mut expr);
        let condition = Condition {
            source: source.to_string(),
            expr: Arc::new(expr),
            reads,
        };
        condition.try_on_a_sample()?;
        Ok(condition)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the condition reads the call's arguments (so it cannot be
    /// decided when a list is filtered).
    pub fn uses_arguments(&self) -> bool {
        self.reads.arguments
    }

    /// Evaluates the condition. A header it reads that the request sent
    /// more than once, or under another spelling an HTTP stack reads as that
    /// name (`X_Tenant` for `x-tenant`), has no one value the upstream is
    /// sure to act on: the condition cannot be evaluated.
    pub fn eval(&self, facts: &Facts) -> Result<bool, EvalError> {
        self.eval_in(&Scope::new(facts))
    }

    /// Evaluates the condition in a scope shared with the call's other
    /// conditions (its variables are built once).
    pub fn eval_in(&self, scope: &Scope) -> Result<bool, EvalError> {
        if self.reads_an_ambiguous_header(scope.facts.headers) {
            return Err(EvalError::Failed);
        }
        let context = scope.context.get_or_init(|| context_for(scope.facts));
        let Some(context) = context else {
            return Err(EvalError::Failed);
        };
        match Cel::resolve(&self.expr, context) {
            Ok(Cel::Bool(value)) => Ok(value),
            Ok(_) => Err(EvalError::NotBoolean),
            Err(_) => Err(EvalError::Failed),
        }
    }

    /// A sample request every well-formed condition can run on: a value of
    /// another type than a boolean means the expression can never decide.
    fn try_on_a_sample(&self) -> Result<(), String> {
        let identity = Identity::anonymous("https://issuer.example");
        let arguments = Value::Object(serde_json::Map::new());
        let facts = Facts {
            method: "tools/call",
            name: Some("sample"),
            arguments: Some(&arguments),
            headers: &[],
            identity: &identity,
            now_s: 0,
        };
        match self.eval(&facts) {
            Err(EvalError::NotBoolean) => Err("must yield true or false".into()),
            _ => Ok(()),
        }
    }
}

impl Condition {
    fn reads_an_ambiguous_header(&self, headers: &[(String, String)]) -> bool {
        if self.reads.all_headers {
            // Any header may be read: every one must have one spelling and
            // one value.
            let mut seen: Vec<String> = Vec::with_capacity(headers.len());
            for (name, _) in headers {
                let folded = fold_header_name(name);
                if name.contains('_') || seen.contains(&folded) {
                    return true;
                }
                seen.push(folded);
            }
            return false;
        }
        self.reads
            .header_names
            .iter()
            .any(|name| header_is_ambiguous(name, headers))
    }
}

/// Whether `name` (lower-case) was sent more than once, or under another
/// spelling than `name` itself that some HTTP stack reads as it (case,
/// `_` for `-`). Not sent at all is not ambiguous: reading it is an error
/// (or `has` / `in` false) as for any missing key.
fn header_is_ambiguous(name: &str, headers: &[(String, String)]) -> bool {
    let wanted = fold_header_name(name);
    let mut spellings = headers
        .iter()
        .filter(|(n, _)| fold_header_name(n) == wanted);
    match (spellings.next(), spellings.next()) {
        (None, _) => false,
        (Some((sent, _)), None) => sent.to_ascii_lowercase() != name,
        (Some(_), Some(_)) => true,
    }
}

/// A header name as CGI-style servers read it: lower-case, `_` for `-`.
fn fold_header_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn request_value(facts: &Facts) -> Cel {
    let mut headers: HashMap<Key, Cel> = HashMap::new();
    for (name, value) in facts.headers {
        headers
            .entry(Key::String(Arc::new(name.to_ascii_lowercase())))
            .or_insert_with(|| Cel::String(Arc::new(value.clone())));
    }
    let mut request: HashMap<Key, Cel> = HashMap::new();
    request.insert(
        key("method"),
        Cel::String(Arc::new(facts.method.to_string())),
    );
    request.insert(
        key("name"),
        facts
            .name
            .map_or(Cel::Null, |n| Cel::String(Arc::new(n.to_string()))),
    );
    request.insert(key("arguments"), facts.arguments.map_or(Cel::Null, to_cel));
    request.insert(
        key("headers"),
        Cel::Map(Map {
            map: Arc::new(headers),
        }),
    );
    Cel::Map(Map {
        map: Arc::new(request),
    })
}

fn token_value(identity: &Identity) -> Cel {
    let strings = |items: &[String]| {
        Cel::List(Arc::new(
            items
                .iter()
                .map(|s| Cel::String(Arc::new(s.clone())))
                .collect(),
        ))
    };
    let text = |s: &Option<String>| {
        s.as_ref()
            .map_or(Cel::Null, |s| Cel::String(Arc::new(s.clone())))
    };
    let mut token: HashMap<Key, Cel> = HashMap::new();
    token.insert(
        key("claims"),
        to_cel(&Value::Object(identity.claims.clone())),
    );
    token.insert(key("sub"), text(&identity.subject));
    token.insert(key("client_id"), text(&identity.client_id));
    token.insert(key("roles"), strings(&identity.roles));
    token.insert(key("scopes"), strings(&identity.granted_scopes()));
    token.insert(
        key("issuer"),
        Cel::String(Arc::new(identity.issuer.clone())),
    );
    Cel::Map(Map {
        map: Arc::new(token),
    })
}

fn key(name: &str) -> Key {
    Key::String(Arc::new(name.to_string()))
}

/// JSON as CEL values: integers stay integers (`int`, or `uint` beyond
/// i64), other numbers are doubles.
pub fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Cel::Int(i)
            } else if let Some(u) = n.as_u64() {
                Cel::UInt(u)
            } else {
                Cel::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => Cel::Map(Map {
            map: Arc::new(
                map.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

mod boolean;
#[cfg(test)]
mod tests;
