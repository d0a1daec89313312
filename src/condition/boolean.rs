//! Whether a condition can yield a boolean at all, read off its parsed
//! expression when the configuration loads. The `cel` crate has no type
//! checker; this is a small, conservative one: it refuses an expression
//! only when no request can make it true or false — arithmetic, a literal
//! other than `true` / `false`, a list or map, `size()`, a conversion to
//! another type, a variable of a known type that is no boolean
//! (`request.method`, `token.roles`, `now`, …) — and accepts whatever may be
//! a boolean at run time: comparisons, `&&` / `||` / `!`, `in`, `has()`, the
//! `all` / `exists` / `exists_one` macros, the string tests, and the
//! dynamic values (a member of `request.arguments` or `token.claims`), which
//! keep failing closed at run time when they are not.

use cel::common::ast::{operators, CallExpr, ComprehensionExpr, Expr, IdedExpr, LiteralValue};

/// What an expression yields, as far as the configuration tells.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    /// True or false.
    Bool,
    /// Known only at run time (an argument, a claim): may be a boolean.
    Dyn,
    /// The `request` variable.
    Request,
    /// The `token` variable.
    Token,
    /// A map whose values are of this type.
    Map(Box<Ty>),
    /// A list whose elements are of this type.
    List(Box<Ty>),
    /// A value of a known kind that is no boolean, as the message names it
    /// ("a number", "a string", …).
    Other(&'static str),
    /// No value at all: evaluating it is always an error.
    Error(&'static str),
}

const NUMBER: Ty = Ty::Other("a number");
const STRING: Ty = Ty::Other("a string");

impl Ty {
    /// Whether some request may make the expression true or false.
    fn may_be_bool(&self) -> bool {
        matches!(self, Ty::Bool | Ty::Dyn)
    }

    fn describe(&self) -> &'static str {
        match self {
            Ty::Bool => "true or false",
            Ty::Dyn => "a value known only at run time",
            Ty::Request | Ty::Token | Ty::Map(_) => "a map",
            Ty::List(_) => "a list",
            Ty::Other(what) | Ty::Error(what) => what,
        }
    }

    /// The type of `self.field` (or `self['field']`).
    fn field(&self, field: &str) -> Ty {
        match (self, field) {
            (Ty::Request, "method" | "name") => STRING,
            (Ty::Request, "arguments") => Ty::Map(Box::new(Ty::Dyn)),
            // Header values are text, always.
            (Ty::Request, "headers") => Ty::Map(Box::new(STRING)),
            (Ty::Token, "claims") => Ty::Map(Box::new(Ty::Dyn)),
            (Ty::Token, "sub" | "client_id" | "issuer") => STRING,
            (Ty::Token, "roles" | "scopes") => Ty::List(Box::new(STRING)),
            (Ty::Map(value), _) => (**value).clone(),
            // A field the variable lacks is refused before this check; a
            // field of anything else is found (or not) at run time.
            _ => Ty::Dyn,
        }
    }

    /// The type of `self[key]`.
    fn index(&self, key: &IdedExpr) -> Ty {
        match (self, &key.expr) {
            (Ty::Request | Ty::Token, Expr::Literal(LiteralValue::String(name))) => {
                self.field(name.inner())
            }
            (Ty::Map(value), _) | (Ty::List(value), _) => (**value).clone(),
            _ => Ty::Dyn,
        }
    }
}

/// Refuses an expression that cannot yield true or false, saying what it
/// yields instead.
pub(super) fn check(expr: &IdedExpr) -> Result<(), String> {
    let ty = infer(expr, &mut Vec::new());
    if ty.may_be_bool() {
        Ok(())
    } else {
        Err(format!(
            "must yield true or false, and this yields {}",
            ty.describe()
        ))
    }
}

/// The type of `expr`; `bound`: the comprehension variables in scope, with
/// their types.
fn infer(expr: &IdedExpr, bound: &mut Vec<(String, Ty)>) -> Ty {
    match &expr.expr {
        Expr::Literal(literal) => literal_type(literal),
        Expr::List(_) => Ty::List(Box::new(Ty::Dyn)),
        Expr::Map(_) | Expr::Struct(_) => Ty::Map(Box::new(Ty::Dyn)),
        Expr::Ident(name) => ident_type(name, bound),
        // `has(x.f)`
        Expr::Select(select) if select.test => Ty::Bool,
        Expr::Select(select) => infer(&select.operand, bound).field(&select.field),
        Expr::Call(call) => call_type(call, bound),
        Expr::Comprehension(c) => comprehension_type(c, bound),
        Expr::Unspecified => Ty::Dyn,
    }
}

fn literal_type(literal: &LiteralValue) -> Ty {
    match literal {
        LiteralValue::Boolean(_) => Ty::Bool,
        LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => NUMBER,
        LiteralValue::String(_) => STRING,
        LiteralValue::Bytes(_) => Ty::Other("bytes"),
        LiteralValue::Null => Ty::Other("null"),
    }
}

/// A variable: a comprehension's own, else one of the condition's.
fn ident_type(name: &str, bound: &[(String, Ty)]) -> Ty {
    if let Some((_, ty)) = bound.iter().rev().find(|(b, _)| b == name) {
        return ty.clone();
    }
    match name {
        "request" => Ty::Request,
        "token" => Ty::Token,
        "now" => NUMBER,
        // `int`, `string`, … as values are types.
        "int" | "uint" | "double" | "bool" | "string" | "bytes" | "list" | "map" | "null_type"
        | "type" => Ty::Other("a type"),
        _ => Ty::Dyn,
    }
}

/// An operator or a function call.
fn call_type(call: &CallExpr, bound: &mut Vec<(String, Ty)>) -> Ty {
    let arg = |i: usize, bound: &mut Vec<(String, Ty)>| {
        call.args.get(i).map_or(Ty::Dyn, |a| infer(a, bound))
    };
    match call.func_name.as_str() {
        operators::LOGICAL_NOT => {
            if arg(0, bound).may_be_bool() {
                Ty::Bool
            } else {
                Ty::Error("an error (`!` of something that is not true or false)")
            }
        }
        operators::LOGICAL_AND | operators::LOGICAL_OR => {
            // One side may decide alone (`false && x` is false).
            if arg(0, bound).may_be_bool() || arg(1, bound).may_be_bool() {
                Ty::Bool
            } else {
                Ty::Error("an error (`&&` or `||` of two values that are not true or false)")
            }
        }
        operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS
        | operators::IN
        | operators::NOT_STRICTLY_FALSE
        | "contains"
        | "startsWith"
        | "endsWith"
        | "matches"
        | "bool" => Ty::Bool,
        operators::CONDITIONAL => join(arg(1, bound), arg(2, bound)),
        operators::ADD => sum_type(arg(0, bound), arg(1, bound)),
        operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | operators::NEGATE
        | "size"
        | "int"
        | "uint"
        | "double" => NUMBER,
        "string" => STRING,
        "bytes" => Ty::Other("bytes"),
        "type" => Ty::Other("a type"),
        operators::INDEX => {
            let operand = arg(0, bound);
            call.args.get(1).map_or(Ty::Dyn, |key| operand.index(key))
        }
        // `dyn(x)`, optionals (`x.?f`, `x[?k]`), anything else: up to the
        // run time.
        _ => Ty::Dyn,
    }
}

/// The type of `a + b`: never a boolean.
fn sum_type(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        (Ty::List(e), _) | (_, Ty::List(e)) => Ty::List(e),
        (t @ Ty::Other(_), _) | (_, t @ Ty::Other(_)) => t,
        _ => Ty::Other("a number, a string, a list or bytes (`+`)"),
    }
}

/// A macro's loop (`all`, `exists`, `map`, `filter`, …): its result, with
/// the loop's variables bound while it is inferred.
fn comprehension_type(c: &ComprehensionExpr, bound: &mut Vec<(String, Ty)>) -> Ty {
    let range = infer(&c.iter_range, bound);
    let element = match &range {
        Ty::List(e) => (**e).clone(),
        _ => Ty::Dyn,
    };
    let before = bound.len();
    match &c.iter_var2 {
        // `(index or key, element or value)`
        Some(second) => {
            bound.push((c.iter_var.clone(), Ty::Dyn));
            let value = match &range {
                Ty::Map(v) => (**v).clone(),
                _ => element,
            };
            bound.push((second.clone(), value));
        }
        None => bound.push((c.iter_var.clone(), element)),
    }
    let accumulator = infer(&c.accu_init, bound);
    bound.push((c.accu_var.clone(), accumulator));
    let result = infer(&c.result, bound);
    bound.truncate(before);
    result
}

/// The type of `c ? a : b`: a boolean when either branch may be one.
fn join(a: Ty, b: Ty) -> Ty {
    match (a.may_be_bool(), b.may_be_bool()) {
        (true, true) if a == Ty::Bool && b == Ty::Bool => Ty::Bool,
        (true, _) | (_, true) => Ty::Dyn,
        _ if a.describe() == b.describe() => a,
        _ => Ty::Other("a value that is not true or false in either branch"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::condition::Condition;
    use crate::config::Policy;

    /// Loads a configuration whose fourth rule has `when`.
    fn load(when: &str) -> Result<Policy, String> {
        Policy::from_value(&json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": "https://idp.example.com",
                "jwks": {"remote": {"cluster": "idp", "url": "https://idp.example.com/jwks"}}}],
            "rules": [
                {"effect": "allow", "methods": ["initialize"]},
                {"effect": "allow", "methods": ["tools/list"]},
                {"effect": "allow", "methods": ["ping"]},
                {"name": "fourth", "effect": "allow", "methods": ["tools/call"], "when": when}
            ]
        }))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn expressions_that_cannot_yield_a_boolean_refuse_the_configuration_naming_the_rule() {
        for (source, yields) in [
            // Arithmetic, on anything.
            ("request.arguments.amount + 1", "a number"),
            (
                "request.arguments.a + request.arguments.b",
                "a number, a string, a list or bytes",
            ),
            ("request.arguments.amount - 1", "a number"),
            ("request.arguments.amount * 2", "a number"),
            ("request.arguments.amount / 2", "a number"),
            ("request.arguments.amount % 2", "a number"),
            ("-request.arguments.amount", "a number"),
            ("'a' + request.arguments.s", "a string"),
            // Literals other than true and false.
            ("1", "a number"),
            ("2.5", "a number"),
            ("7u", "a number"),
            ("'yes'", "a string"),
            ("b'yes'", "bytes"),
            ("null", "null"),
            ("[true]", "a list"),
            ("{'ok': true}", "a map"),
            // Functions that yield no boolean.
            ("size(request.arguments)", "a number"),
            ("request.arguments.path.size()", "a number"),
            ("string(request.arguments.ok)", "a string"),
            ("int(request.arguments.n)", "a number"),
            ("double(request.arguments.n)", "a number"),
            ("uint(request.arguments.n)", "a number"),
            ("bytes(request.arguments.s)", "bytes"),
            ("type(request.arguments.ok)", "a type"),
            ("bool", "a type"),
            // Variables of a known type.
            ("request.method", "a string"),
            ("request.name", "a string"),
            ("request.arguments", "a map"),
            ("request.headers", "a map"),
            ("request.headers['x-admin']", "a string"),
            ("request.headers.x_admin", "a string"),
            ("request", "a map"),
            ("token", "a map"),
            ("token.claims", "a map"),
            ("token.sub", "a string"),
            ("token.client_id", "a string"),
            ("token.issuer", "a string"),
            ("token.roles", "a list"),
            ("token.scopes", "a list"),
            ("token.roles[0]", "a string"),
            ("token['sub']", "a string"),
            ("now", "a number"),
            // Macros that build lists.
            ("request.arguments.items.map(i, i.ok)", "a list"),
            ("request.arguments.items.filter(i, i.ok)", "a list"),
            ("token.roles.map(r, r == 'admin')", "a list"),
            // Both branches of a choice.
            ("request.arguments.big ? 100 : 1", "a number"),
            ("request.arguments.big ? 'a' : 1", "in either branch"),
            // Operators that need booleans, given none.
            ("!request.method", "`!`"),
            ("token.sub || request.method", "`&&` or `||`"),
            (
                "token.roles.exists(r, r.size() > 1) ? token.sub : token.issuer",
                "a string",
            ),
        ] {
            let err = Condition::compile(source).expect_err(source);
            assert!(
                err.contains("must yield true or false") && err.contains(yields),
                "{source}: {err}"
            );
            let err = load(source).expect_err(source);
            assert!(
                err.starts_with("configuration field `rules[3].when`: must yield true or false"),
                "{source}: {err}"
            );
        }
    }

    #[test]
    fn expressions_that_may_yield_a_boolean_are_accepted() {
        for source in [
            "true",
            "false",
            // Comparisons and logic.
            "request.arguments.amount < 100",
            "request.arguments.amount + 1 <= 100",
            "request.method == 'tools/call'",
            "request.name != 'x'",
            "now >= 1700000000",
            "size(token.roles) > 0",
            "!has(request.arguments.force)",
            "has(request.arguments.force) && request.arguments.force == false",
            "token.sub == 'alice' || 'admin' in token.roles",
            "'x-tenant' in request.headers",
            "'tenant' in token.claims",
            "bool(request.arguments.flag)",
            // The string tests.
            "request.arguments.path.startsWith('/public/')",
            "request.name.endsWith('.txt')",
            "token.issuer.contains('idp')",
            // The macros that decide.
            "token.roles.exists(r, r == 'admin')",
            "token.scopes.all(s, s.startsWith('mcp:'))",
            "request.arguments.items.exists_one(i, i.main)",
            "request.arguments.items.all(i, i.ok)",
            "request.arguments.items.map(i, i.n).all(n, n < 10)",
            "size(request.arguments.items.filter(i, i.ok)) == 1",
            // Values known only at run time: may be booleans.
            "request.arguments.confirmed",
            "request.arguments['confirmed']",
            "request.arguments.options.dry_run",
            "token.claims.email_verified",
            "token.claims['mfa']",
            "dyn(request.arguments.ok)",
            "request.arguments.items[0]",
            "request.arguments.items.exists(i, i.ok) ? request.arguments.ok : false",
            // A choice with one boolean branch.
            "request.arguments.big ? request.arguments.ok : false",
            "request.arguments.flag ? true : false",
            // One side may decide `&&` alone.
            "request.arguments.n && true",
        ] {
            assert!(Condition::compile(source).is_ok(), "{source}");
            assert!(load(source).is_ok(), "{source}");
        }
    }

    #[test]
    fn an_unknown_name_is_refused_for_what_it_is_before_its_type() {
        let err = Condition::compile("request.argument + 1").expect_err("refused");
        assert!(err.contains("has no field `argument`"), "{err}");
        let err = Condition::compile("request.arguments.path.matches('^/p')").expect_err("refused");
        assert!(err.contains("unknown function `matches`"), "{err}");
    }
}
