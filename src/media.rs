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
}
