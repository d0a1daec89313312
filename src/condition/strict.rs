//! Comparisons that refuse values of different types: `==`, `!=` and `in`
//! as conditions evaluate them.

use std::borrow::Borrow;

use cel::common::ast::{operators, EntryExpr, Expr, IdedExpr};
use cel::objects::Key;
use cel::{Context, ExecutionError, Value as Cel};

/// The functions `==`, `!=` and `in` are evaluated with (see [`strict`]).
const STRICT_EQ: &str = "mcp_authz_strict_eq";
const STRICT_NE: &str = "mcp_authz_strict_ne";
const STRICT_IN: &str = "mcp_authz_strict_in";

/// Adds the strict `==`, `!=` and `in` to `context`; false when one could
/// not be added.
pub(super) fn add_functions(context: &mut Context) -> bool {
    let added = [
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
    added.iter().all(Result::is_ok)
}

/// `==`, `!=` and `in` become functions that refuse to compare values of
/// different types: CEL answers `['mallory'] == 'mallory'` with false,
/// which would let a deny rule's `request.arguments.to == 'mallory'` pass
/// a value a lenient server reads as `mallory`. Here it is an error, and
/// an error counts against the caller.
pub(super) fn strict(expr: &mut IdedExpr) {
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
        Cel::List(items) => any_equal(a, items.iter()),
        Cel::Map(map) => any_equal(
            a,
            map.map.keys().map(|key| match key {
                Key::Int(i) => Cel::Int(*i),
                Key::Uint(u) => Cel::UInt(*u),
                Key::Bool(b) => Cel::Bool(*b),
                Key::String(s) => Cel::String(s.clone()),
            }),
        ),
        _ => Err(TypeMismatch),
    }
}

/// Whether one of `candidates` equals `a`; when none does, one of another
/// type than `a` makes it an error.
fn any_equal<C: Borrow<Cel>>(
    a: &Cel,
    candidates: impl Iterator<Item = C>,
) -> Result<bool, TypeMismatch> {
    let mut mismatch = false;
    for candidate in candidates {
        match strict_eq(a, candidate.borrow()) {
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
