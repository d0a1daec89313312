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

use cel::common::ast::{operators, EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::objects::{Key, Map};
use cel::parser::PrattParser;
use cel::{Context, ExecutionError, Value as Cel};
use serde_json::Value;

use crate::identity::Identity;

/// The fields each variable has.
const REQUEST_FIELDS: &[&str] = &["method", "name", "arguments", "headers"];
const TOKEN_FIELDS: &[&str] = &["claims", "sub", "client_id", "roles", "scopes", "issuer"];
const VARIABLES: &[&str] = &["request", "token", "now"];
/// Type names, which CEL reads as identifiers (`type(x) == int`).
const TYPE_NAMES: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// The functions an expression may call: CEL's standard library as built
/// here (no regular expressions, no time types). A test checks each one
/// works, and that those left out do not.
pub const FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "string",
    "int",
    "uint",
    "double",
    "bytes",
    "bool",
    "dyn",
    "type",
];

/// Deepest nesting of an expression the parser accepts.
const MAX_DEPTH: u16 = 32;

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    expr: Arc<IdedExpr>,
    reads: Reads,
}

/// What a condition reads of the request besides its method and name.
#[derive(Debug, Clone, Default)]
struct Reads {
    /// `request.arguments` (or the whole `request`).
    arguments: bool,
    /// The headers it names literally (`request.headers['x-tenant']`,
    /// `request.headers.x_tenant`, `'x-tenant' in request.headers`),
    /// lower-case.
    header_names: Vec<String>,
    /// It reads `request.headers` in another way (iterates it, indexes it
    /// with a computed name, passes it whole): any header may matter.
    all_headers: bool,
}

/// The functions `==`, `!=` and `in` are evaluated with (see [`strict`]).
const STRICT_EQ: &str = "mcp_authz_strict_eq";
const STRICT_NE: &str = "mcp_authz_strict_ne";
const STRICT_IN: &str = "mcp_authz_strict_in";

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
    let strict_functions = [
        context.add_function(STRICT_EQ, |a: Cel, b: Cel| {
            strict_eq(&a, &b).map(Cel::Bool).map_err(type_error)
        }),
        context.add_function(STRICT_NE, |a: Cel, b: Cel| {
            strict_eq(&a, &b)
                .map(|eq| Cel::Bool(!eq))
                .map_err(type_error)
        }),
        context.add_function(STRICT_IN, |a: Cel, b: Cel| {
            strict_in(&a, &b).map(Cel::Bool).map_err(type_error)
        }),
    ];
    if strict_functions.iter().any(Result::is_err) {
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

/// `==`, `!=` and `in` become functions that refuse to compare values of
/// different types: CEL answers `['mallory'] == 'mallory'` with false,
/// which would let a deny rule's `request.arguments.to == 'mallory'` pass
/// a value a lenient server reads as `mallory`. Here it is an error, and
/// an error counts against the caller.
fn strict(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if call.target.is_none() && call.args.len() == 2 {
                match call.func_name.as_str() {
                    operators::EQUALS => call.func_name = STRICT_EQ.to_string(),
                    operators::NOT_EQUALS => call.func_name = STRICT_NE.to_string(),
                    operators::IN => call.func_name = STRICT_IN.to_string(),
                    _ => {}
                }
            }
            if let Some(target) = &mut call.target {
                strict(target);
            }
            call.args.iter_mut().for_each(strict);
        }
        Expr::Comprehension(comprehension) => {
            strict(&mut comprehension.iter_range);
            strict(&mut comprehension.accu_init);
            strict(&mut comprehension.loop_cond);
            strict(&mut comprehension.loop_step);
            strict(&mut comprehension.result);
        }
        Expr::List(list) => list.elements.iter_mut().for_each(strict),
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(e) = &mut entry.expr {
                    strict(&mut e.key);
                    strict(&mut e.value);
                }
            }
        }
        Expr::Select(select) => strict(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Struct(_) | Expr::Unspecified => {}
    }
}

/// Two values of different types.
struct TypeMismatch;

fn type_error(_: TypeMismatch) -> ExecutionError {
    ExecutionError::function_error("==", "values of different types compared")
}

/// Equality that holds only between values of one type: numbers compare
/// with numbers (exactly: `2^53 + 1` is not `2^53`), anything with `null`
/// (only `null` equals it), lists and maps element by element.
fn strict_eq(a: &Cel, b: &Cel) -> Result<bool, TypeMismatch> {
    match (a, b) {
        (Cel::Null, _) | (_, Cel::Null) => Ok(matches!((a, b), (Cel::Null, Cel::Null))),
        (
            Cel::Int(_) | Cel::UInt(_) | Cel::Float(_),
            Cel::Int(_) | Cel::UInt(_) | Cel::Float(_),
        ) => Ok(numbers_equal(a, b)),
        (Cel::List(x), Cel::List(y)) => {
            let mut equal = x.len() == y.len();
            for (p, q) in x.iter().zip(y.iter()) {
                equal &= strict_eq(p, q)?;
            }
            Ok(equal)
        }
        (Cel::Map(x), Cel::Map(y)) => {
            let mut equal = x.map.len() == y.map.len();
            for (key, p) in x.map.iter() {
                match y.map.get(key) {
                    Some(q) => equal &= strict_eq(p, q)?,
                    None => equal = false,
                }
            }
            Ok(equal)
        }
        _ if std::mem::discriminant(a) == std::mem::discriminant(b) => Ok(a == b),
        _ => Err(TypeMismatch),
    }
}

/// Exact numeric equality across int, uint and double.
fn numbers_equal(a: &Cel, b: &Cel) -> bool {
    fn exact(n: &Cel) -> Option<i128> {
        match n {
            Cel::Int(i) => Some(i128::from(*i)),
            Cel::UInt(u) => Some(i128::from(*u)),
            // Integral doubles within ±2^64 convert exactly.
            Cel::Float(f) if f.fract() == 0.0 && f.abs() < 1.8446744073709552e19 => {
                Some(*f as i128)
            }
            _ => None,
        }
    }
    match (a, b) {
        (Cel::Float(x), Cel::Float(y)) => x == y,
        _ => matches!((exact(a), exact(b)), (Some(x), Some(y)) if x == y),
    }
}

/// `a in b`: b a list holding a value equal to `a`, or a map with the key
/// `a`. When there is none, an element (or key) of another type than `a`
/// makes it an error rather than false.
fn strict_in(a: &Cel, b: &Cel) -> Result<bool, TypeMismatch> {
    match b {
        Cel::List(items) => {
            let mut mismatch = false;
            for item in items.iter() {
                match strict_eq(a, item) {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err(TypeMismatch) => mismatch = true,
                }
            }
            if mismatch {
                Err(TypeMismatch)
            } else {
                Ok(false)
            }
        }
        Cel::Map(map) => {
            let mut mismatch = false;
            for key in map.map.keys() {
                let as_value = match key {
                    Key::Int(i) => Cel::Int(*i),
                    Key::Uint(u) => Cel::UInt(*u),
                    Key::Bool(b) => Cel::Bool(*b),
                    Key::String(s) => Cel::String(s.clone()),
                };
                match strict_eq(a, &as_value) {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err(TypeMismatch) => mismatch = true,
                }
            }
            if mismatch {
                Err(TypeMismatch)
            } else {
                Ok(false)
            }
        }
        _ => Err(TypeMismatch),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Checks every variable, field and function an expression names, and
/// notes what of the request it reads (`reads`).
/// `bound`: the comprehension variables in scope (`x` in `list.all(x, …)`).
fn check(expr: &IdedExpr, bound: &mut Vec<String>, reads: &mut Reads) -> Result<(), String> {
    match &expr.expr {
        Expr::Ident(name) => {
            if bound.iter().any(|b| b == name) || TYPE_NAMES.contains(&name.as_str()) {
                return Ok(());
            }
            if !VARIABLES.contains(&name.as_str()) {
                return Err(format!(
                    "unknown variable `{name}`; the variables are request, token and now"
                ));
            }
            if name == "request" {
                // The whole request, arguments and headers included.
                reads.arguments = true;
                reads.all_headers = true;
            }
            Ok(())
        }
        Expr::Select(select) => {
            if is_request_headers(&select.operand, bound) {
                // `request.headers.x_tenant`, `has(request.headers.x)`.
                reads.header_names.push(select.field.to_ascii_lowercase());
                return Ok(());
            }
            if let Expr::Ident(root) = &select.operand.expr {
                if !bound.iter().any(|b| b == root) {
                    if !VARIABLES.contains(&root.as_str()) {
                        return Err(format!(
                            "unknown variable `{root}`; the variables are request, token and now"
                        ));
                    }
                    let fields = match root.as_str() {
                        "request" => REQUEST_FIELDS,
                        "token" => TOKEN_FIELDS,
                        _ => &[][..], // `now` is a number
                    };
                    if !fields.contains(&select.field.as_str()) {
                        return Err(format!(
                            "`{root}` has no field `{}`; it has {}",
                            select.field,
                            if fields.is_empty() {
                                "none".to_string()
                            } else {
                                fields.join(", ")
                            }
                        ));
                    }
                    if root == "request" {
                        match select.field.as_str() {
                            "arguments" => reads.arguments = true,
                            // Not under a literal name: any header may be read.
                            "headers" => reads.all_headers = true,
                            _ => {}
                        }
                    }
                    return Ok(());
                }
            }
            check(&select.operand, bound, reads)
        }
        Expr::Call(call) => {
            let operator = call.func_name.starts_with(['_', '@', '!', '-']);
            if !operator && !FUNCTIONS.contains(&call.func_name.as_str()) {
                return Err(format!("unknown function `{}`", call.func_name));
            }
            if let Some(name) = literal_header_read(call, bound) {
                reads.header_names.push(name);
                return Ok(());
            }
            if let Some(target) = &call.target {
                check(target, bound, reads)?;
            }
            for arg in &call.args {
                check(arg, bound, reads)?;
            }
            Ok(())
        }
        Expr::Comprehension(comprehension) => {
            check(&comprehension.iter_range, bound, reads)?;
            check(&comprehension.accu_init, bound, reads)?;
            let before = bound.len();
            bound.push(comprehension.iter_var.clone());
            bound.extend(comprehension.iter_var2.clone());
            bound.push(comprehension.accu_var.clone());
            let inner = [
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ]
            .into_iter()
            .try_for_each(|e| check(e, bound, reads));
            bound.truncate(before);
            inner
        }
        Expr::List(list) => list
            .elements
            .iter()
            .try_for_each(|e| check(e, bound, reads)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                check(&e.key, bound, reads)?;
                check(&e.value, bound, reads)
            }
            EntryExpr::StructField(_) => Err("message literals are not supported".into()),
        }),
        Expr::Struct(_) => Err("message literals are not supported".into()),
        Expr::Literal(_) => Ok(()),
        Expr::Unspecified => Err("incomplete expression".into()),
    }
}

/// Whether `expr` is `request.headers` (the variable, not a comprehension
/// variable named `request`).
fn is_request_headers(expr: &IdedExpr, bound: &[String]) -> bool {
    match &expr.expr {
        Expr::Select(select) if !select.test && select.field == "headers" => {
            matches!(&select.operand.expr, Expr::Ident(root)
                if root == "request" && !bound.iter().any(|b| b == root))
        }
        _ => false,
    }
}

/// The header a call reads under a literal name, lower-case:
/// `request.headers['x-tenant']` (or `[?'x-tenant']`), `request.headers.?x`
/// and `'x-tenant' in request.headers`.
fn literal_header_read(call: &cel::common::ast::CallExpr, bound: &[String]) -> Option<String> {
    let [first, second] = call.args.as_slice() else {
        return None;
    };
    let (headers, name) = match call.func_name.as_str() {
        operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT => (first, second),
        operators::IN => (second, first),
        _ => return None,
    };
    if call.target.is_some() || !is_request_headers(headers, bound) {
        return None;
    }
    match &name.expr {
        Expr::Literal(LiteralValue::String(name)) => Some(name.inner().to_ascii_lowercase()),
        _ => None,
    }
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
