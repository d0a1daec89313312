//! Media types, as `Content-Type` headers carry them: the essence
//! (`type/subtype`, lower-case) compared, parameters ignored.

/// The essence of a `Content-Type` value: `Application/JSON; charset=utf-8`
/// is `application/json`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether `content_type` has the essence `essence` (given in lower case),
/// without copying it: the request path asks this of every call.
pub fn is(content_type: &str, essence: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case(essence)
}

/// `application/json`, with or without parameters.
pub const JSON: &str = "application/json";
/// `text/event-stream`, with or without parameters.
pub const EVENT_STREAM: &str = "text/event-stream";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn essence_ignores_case_parameters_and_space() {
        assert_eq!(essence("Application/JSON; charset=utf-8"), JSON);
        assert_eq!(essence(" text/event-stream "), EVENT_STREAM);
        assert_eq!(essence("application/json-rpc"), "application/json-rpc");
        assert_eq!(essence(""), "");
    }

    #[test]
    fn is_agrees_with_essence() {
        for value in [
            "Application/JSON; charset=utf-8",
            " text/event-stream ",
            "application/json-rpc",
            "application/jsonx",
            "",
            ";",
            "APPLICATION/JSON",
        ] {
            for essence_of in [JSON, EVENT_STREAM, "application/json-rpc", ""] {
                assert_eq!(
                    is(value, essence_of),
                    essence(value) == essence_of,
                    "{value:?}"
                );
            }
        }
    }
}
