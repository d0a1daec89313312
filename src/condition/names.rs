//! The names an expression may use — the variables, their fields, the
//! functions — checked when a condition compiles, and what of the request
//! the expression reads.

use cel::common::ast::{
    operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SelectExpr,
};

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

/// What a condition reads of the request besides its method and name.
#[derive(Debug, Clone, Default)]
pub(super) struct Reads {
    /// `request.arguments` (or the whole `request`).
    pub(super) arguments: bool,
    /// The headers it names literally (`request.headers['x-tenant']`,
    /// `request.headers.x_tenant`, `'x-tenant' in request.headers`),
    /// lower-case.
    pub(super) header_names: Vec<String>,
    /// It reads `request.headers` in another way (iterates it, indexes it
    /// with a computed name, passes it whole): any header may matter.
    pub(super) all_headers: bool,
}

/// Checks every variable, field and function an expression names, and
/// notes what of the request it reads (`reads`).
/// `bound`: the comprehension variables in scope (`x` in `list.all(x, …)`).
pub(super) fn check(
    expr: &IdedExpr,
    bound: &mut Vec<String>,
    reads: &mut Reads,
) -> Result<(), String> {
    match &expr.expr {
        Expr::Ident(name) => check_variable(name, bound, reads),
        Expr::Select(select) => check_select(select, bound, reads),
        Expr::Call(call) => check_call(call, bound, reads),
        Expr::Comprehension(comprehension) => check_comprehension(comprehension, bound, reads),
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

/// An identifier: a comprehension variable, a type name, or one of the
/// variables (the whole `request` reads its arguments and headers).
fn check_variable(name: &str, bound: &[String], reads: &mut Reads) -> Result<(), String> {
    if bound.iter().any(|b| b == name) || TYPE_NAMES.contains(&name) {
        return Ok(());
    }
    if !VARIABLES.contains(&name) {
        return Err(unknown_variable(name));
    }
    if name == "request" {
        // The whole request, arguments and headers included.
        reads.arguments = true;
        reads.all_headers = true;
    }
    Ok(())
}

fn unknown_variable(name: &str) -> String {
    format!("unknown variable `{name}`; the variables are request, token and now")
}

/// `operand.field`: a header read by name, a variable's field (which must
/// exist), or a field of something else, checked in turn.
fn check_select(
    select: &SelectExpr,
    bound: &mut Vec<String>,
    reads: &mut Reads,
) -> Result<(), String> {
    if is_request_headers(&select.operand, bound) {
        // `request.headers.x_tenant`, `has(request.headers.x)`.
        reads.header_names.push(select.field.to_ascii_lowercase());
        return Ok(());
    }
    match &select.operand.expr {
        Expr::Ident(root) if !bound.iter().any(|b| b == root) => {
            check_field(root, &select.field, reads)
        }
        _ => check(&select.operand, bound, reads),
    }
}

/// A field of one of the variables.
fn check_field(root: &str, field: &str, reads: &mut Reads) -> Result<(), String> {
    if !VARIABLES.contains(&root) {
        return Err(unknown_variable(root));
    }
    let fields = match root {
        "request" => REQUEST_FIELDS,
        "token" => TOKEN_FIELDS,
        _ => &[][..], // `now` is a number
    };
    if !fields.contains(&field) {
        return Err(format!(
            "`{root}` has no field `{field}`; it has {}",
            if fields.is_empty() {
                "none".to_string()
            } else {
                fields.join(", ")
            }
        ));
    }
    if root == "request" {
        match field {
            "arguments" => reads.arguments = true,
            // Not under a literal name: any header may be read.
            "headers" => reads.all_headers = true,
            _ => {}
        }
    }
    Ok(())
}

/// A function or operator call: a function this build has, a header read
/// by a literal name, or else its target and arguments checked in turn.
fn check_call(call: &CallExpr, bound: &mut Vec<String>, reads: &mut Reads) -> Result<(), String> {
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

/// A macro such as `list.all(x, …)`: its range and start outside, its
/// body with its variables bound.
fn check_comprehension(
    comprehension: &ComprehensionExpr,
    bound: &mut Vec<String>,
    reads: &mut Reads,
) -> Result<(), String> {
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
fn literal_header_read(call: &CallExpr, bound: &[String]) -> Option<String> {
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
