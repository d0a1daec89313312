//! Body parsing and the MCP header checks.

use super::*;
use serde_json::json;

fn call(method: &str, name: Option<&str>, id: Option<Value>) -> Message {
    Message::Call(Call {
        method: method.to_string(),
        name: name.map(str::to_string),
        id,
        arguments: None,
    })
}

/// The same body without arguments: what most cases compare.
fn without_arguments(body: Body) -> Body {
    let strip = |m: Message| match m {
        Message::Call(mut call) => {
            call.arguments = None;
            Message::Call(call)
        }
        other => other,
    };
    match body {
        Body::Single(m) => Body::Single(strip(m)),
        Body::Batch(ms) => Body::Batch(ms.into_iter().map(strip).collect()),
    }
}

#[test]
fn arguments_are_kept_as_parsed() {
    let body = parse_body(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":[1,{"b":null}],"n":1.5}}}"#,
    )
    .unwrap();
    let Body::Single(Message::Call(call)) = body else {
        panic!("one call");
    };
    assert_eq!(
        call.arguments,
        Some(json!({"a": [1, {"b": null}], "n": 1.5}))
    );
    let body = parse_body(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":null}}"#,
    )
    .unwrap();
    let Body::Single(Message::Call(call)) = body else {
        panic!("one call");
    };
    assert_eq!(call.arguments, None);
}

#[test]
fn valid_bodies_parse_into_typed_messages() {
    let cases: &[(&str, &[u8], Body)] = &[
        (
            "tools/call with name",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","arguments":{"a":[1,{"b":null}]}}}"#,
            Body::Single(call("tools/call", Some("get_x"), Some(json!(1)))),
        ),
        (
            "prompts/get with name, string id",
            br#"{"jsonrpc":"2.0","id":"abc","method":"prompts/get","params":{"name":"p"}}"#,
            Body::Single(call("prompts/get", Some("p"), Some(json!("abc")))),
        ),
        (
            "resources/read takes the uri",
            br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a.txt","name":"ignored"}}"#,
            Body::Single(call("resources/read", Some("file:///a.txt"), Some(json!(2)))),
        ),
        (
            "tools/list has no name even when params.name is there",
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"name":"x","cursor":"c"}}"#,
            Body::Single(call("tools/list", None, Some(json!(3)))),
        ),
        (
            "escaped slash in method",
            br#"{"jsonrpc":"2.0","id":4,"method":"tools\/call","params":{"name":"get_x"}}"#,
            Body::Single(call("tools/call", Some("get_x"), Some(json!(4)))),
        ),
        (
            "unicode escape in method and name",
            br#"{"jsonrpc":"2.0","id":5,"method":"\u0074ools/call","params":{"name":"del\u0065te_x"}}"#,
            Body::Single(call("tools/call", Some("delete_x"), Some(json!(5)))),
        ),
        (
            "escaped key spelling still names the field",
            br#"{"jsonrpc":"2.0","id":6,"m\u0065thod":"tools/call","params":{"na\u006de":"danger"}}"#,
            Body::Single(call("tools/call", Some("danger"), Some(json!(6)))),
        ),
        (
            "same keys in nested and sibling objects are not duplicates",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"inner","a":{"a":{"a":1}},"b":[{"a":1},{"a":2}],"c":{"b":1},"d":{"a":1,"b":2}},"name":"outer","_meta":{"name":"meta"}},"x":{"id":2,"method":"m"}}"#,
            Body::Single(call("tools/call", Some("outer"), Some(json!(1)))),
        ),
        (
            "notification has no id",
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Body::Single(call("notifications/initialized", None, None)),
        ),
        (
            "negative and large integer ids",
            br#"[{"jsonrpc":"2.0","id":-7,"method":"ping"},{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}]"#,
            Body::Batch(vec![
                call("ping", None, Some(json!(-7))),
                call("ping", None, Some(json!(u64::MAX))),
            ]),
        ),
        (
            "params as an array",
            br#"{"jsonrpc":"2.0","id":8,"method":"custom","params":[1,2,{"k":"v"}]}"#,
            Body::Single(call("custom", None, Some(json!(8)))),
        ),
        (
            "response with result",
            br#"{"jsonrpc":"2.0","id":9,"result":{"roots":[]}}"#,
            Body::Single(Message::Response { id: json!(9) }),
        ),
        (
            "response with error",
            br#"{"jsonrpc":"2.0","id":"s-1","error":{"code":-1,"message":"no"}}"#,
            Body::Single(Message::Response { id: json!("s-1") }),
        ),
        (
            "unknown top-level keys are tolerated",
            br#"{"jsonrpc":"2.0","id":10,"method":"ping","extra":{"x":1}}"#,
            Body::Single(call("ping", None, Some(json!(10)))),
        ),
        (
            "surrounding whitespace",
            b" \n{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"ping\"}\r\n ",
            Body::Single(call("ping", None, Some(json!(11)))),
        ),
        (
            "2025-03-26 batch of initialize and tools/list",
            br#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"c","version":"1"}}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
            Body::Batch(vec![
                call("initialize", None, Some(json!(1))),
                call("tools/list", None, Some(json!(2))),
            ]),
        ),
        (
            "2025-06-18 initialize",
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true},"elicitation":{}},"clientInfo":{"name":"c","title":"C","version":"1.0"}}}"#,
            Body::Single(call("initialize", None, Some(json!(0)))),
        ),
        (
            "2026-07-28 server/discover",
            br#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            Body::Single(call("server/discover", None, Some(json!(1)))),
        ),
        (
            "batch mixing a call, a notification and a response",
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"notifications/progress"},{"jsonrpc":"2.0","id":"r","result":{}}]"#,
            Body::Batch(vec![
                call("tools/call", Some("a"), Some(json!(1))),
                call("notifications/progress", None, None),
                Message::Response { id: json!("r") },
            ]),
        ),
    ];
    for (what, bytes, expected) in cases {
        assert_eq!(
            parse_body(bytes).map(without_arguments).as_ref(),
            Ok(expected),
            "{what}"
        );
    }
}

#[test]
fn bad_bodies_are_refused_with_the_right_code() {
    let cases: &[(&str, &[u8], i64)] = &[
        // Malformed JSON.
        ("empty body", b"", codes::PARSE_ERROR),
        ("whitespace only", b"  ", codes::PARSE_ERROR),
        ("truncated", br#"{"jsonrpc":"2.0","id":1,"method":"ping""#, codes::PARSE_ERROR),
        ("not JSON", b"hello", codes::PARSE_ERROR),
        ("single quotes", br#"{'jsonrpc':'2.0'}"#, codes::PARSE_ERROR),
        ("trailing comma", br#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#, codes::PARSE_ERROR),
        ("trailing garbage", br#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#, codes::PARSE_ERROR),
        (
            "two concatenated objects",
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_x"}}"#,
            codes::PARSE_ERROR,
        ),
        ("invalid UTF-8 in method", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"pi\xffng\"}", codes::PARSE_ERROR),
        ("invalid UTF-8 in a key", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"\xc3\x28\":1}", codes::PARSE_ERROR),
        (
            "invalid UTF-8 deep in arguments",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":{\"x\":[\"\xed\xa0\x80\"]}}}",
            codes::PARSE_ERROR,
        ),
        ("invalid UTF-8 outside strings", b"{\"jsonrpc\":\"2.0\"\xff}", codes::PARSE_ERROR),
        (
            "lone surrogate escape",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}"#,
            codes::PARSE_ERROR,
        ),
        (
            "malformed after a duplicate key is still a parse error",
            br#"{"method":"a","method":"b""#,
            codes::PARSE_ERROR,
        ),
        // Not JSON-RPC.
        ("a string", br#""tools/call""#, codes::INVALID_REQUEST),
        ("a number", b"42", codes::INVALID_REQUEST),
        ("null", b"null", codes::INVALID_REQUEST),
        ("missing jsonrpc", br#"{"id":1,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("wrong jsonrpc version", br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("numeric jsonrpc", br#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("missing method", br#"{"jsonrpc":"2.0","id":1}"#, codes::INVALID_REQUEST),
        ("method not a string", br#"{"jsonrpc":"2.0","id":1,"method":["tools/call"]}"#, codes::INVALID_REQUEST),
        ("null id", br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("float id", br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("integral float id", br#"{"jsonrpc":"2.0","id":1.0,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("exponent id", br#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("boolean id", br#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#, codes::INVALID_REQUEST),
        ("object id", br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#, codes::INVALID_REQUEST),
        ("array id", br#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, codes::INVALID_REQUEST),
        ("params a string", br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#, codes::INVALID_REQUEST),
        ("params null", br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#, codes::INVALID_REQUEST),
        ("tools/call without params", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, codes::INVALID_REQUEST),
        (
            "tools/call without a name",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "tools/call with a numeric name",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":42}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "tools/call with an array name",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_x"]}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "tools/call with a null name",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "tools/call with params as an array",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_x"]}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "prompts/get without a name",
            br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "resources/read with a name but no uri",
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"file:///a"}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "resources/read with a numeric uri",
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":1}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "request carrying a result",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"result":{}}"#,
            codes::INVALID_REQUEST,
        ),
        ("response without id", br#"{"jsonrpc":"2.0","result":{}}"#, codes::INVALID_REQUEST),
        ("response with null id", br#"{"jsonrpc":"2.0","id":null,"error":{}}"#, codes::INVALID_REQUEST),
        ("response with result and error", br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#, codes::INVALID_REQUEST),
        ("response with params", br#"{"jsonrpc":"2.0","id":1,"result":{},"params":{}}"#, codes::INVALID_REQUEST),
        // A list asked for without an id: its answer could not be matched
        // to the list it must be filtered as.
        ("list without an id", br#"{"jsonrpc":"2.0","method":"tools/list"}"#, codes::INVALID_REQUEST),
        (
            "resource templates without an id",
            br#"{"jsonrpc":"2.0","method":"resources/templates/list","params":{}}"#,
            codes::INVALID_REQUEST,
        ),
        (
            "list without an id in a batch",
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"prompts/list"}]"#,
            codes::INVALID_REQUEST,
        ),
        // Batches.
        ("empty batch", b"[]", codes::INVALID_REQUEST),
        ("nested batch", br#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#, codes::INVALID_REQUEST),
        ("batch with a non-object", br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},1]"#, codes::INVALID_REQUEST),
        (
            "batch with one invalid element",
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#,
            codes::INVALID_REQUEST,
        ),
    ];
    for (what, bytes, code) in cases {
        match parse_body(bytes) {
            Err(error) => assert_eq!(error.code(), *code, "{what}: {error:?}"),
            Ok(body) => panic!("{what}: accepted as {body:?}"),
        }
    }
}

#[test]
fn duplicate_keys_anywhere_are_invalid() {
    let cases: &[(&str, &str)] = &[
        (
            "name, safe first",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"danger"}}"#,
        ),
        (
            "name, danger first",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger","name":"safe"}}"#,
        ),
        (
            "method at top level",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"x"}}"#,
        ),
        (
            "method, reverse order",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"method":"ping"}"#,
        ),
        (
            "params twice",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#,
        ),
        (
            "id twice",
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
        ),
        (
            "jsonrpc twice",
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ),
        (
            "unknown top-level key twice",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1,"x":2}"#,
        ),
        (
            "uri twice",
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#,
        ),
        (
            "escaped name key",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","na\u006de":"danger"}}"#,
        ),
        (
            "escaped name key first",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"\u006eame":"danger","name":"safe"}}"#,
        ),
        (
            "escaped method key",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call","params":{"name":"x"}}"#,
        ),
        (
            "escaped slash in key",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a/b":1,"a\/b":2}}"#,
        ),
        (
            "deep in arguments",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":{"y":[{"z":1,"z":2}]}}}}"#,
        ),
        (
            "in _meta",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"k":1,"k":1}}}"#,
        ),
        (
            "in a response result",
            r#"{"jsonrpc":"2.0","id":1,"result":{"a":1,"a":2}}"#,
        ),
        (
            "in an object id",
            r#"{"jsonrpc":"2.0","id":{"a":1,"a":2},"method":"ping"}"#,
        ),
        (
            "in a later batch element",
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a","name":"delete_x"}}]"#,
        ),
        ("in a nested batch", r#"[[{"a":1,"a":2}]]"#),
    ];
    for (what, body) in cases {
        match parse_body(body.as_bytes()) {
            Err(BodyError::Invalid(message)) => {
                assert!(message.starts_with("duplicate key"), "{what}: {message}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn duplicate_keys_in_large_objects_are_found() {
    // Past the linear-scan threshold, the hash set takes over.
    let mut arguments: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
    let clean = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{{}}}}}}}"#,
        arguments.join(",")
    );
    assert!(parse_body(clean.as_bytes()).is_ok());
    // A big object nested in, and followed by, small ones with the same keys.
    let nested = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{"k1":{{{}}},"k2":[{{{}}}],"k3":{{"k1":1}}}}}}}}"#,
        arguments.join(","),
        arguments.join(",")
    );
    assert!(parse_body(nested.as_bytes()).is_ok());
    arguments.push("\"k\\u0035\":0".to_string()); // "k5", escaped
    let duplicated = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{{}}}}}}}"#,
        arguments.join(",")
    );
    assert_eq!(
        parse_body(duplicated.as_bytes()),
        Err(BodyError::Invalid("duplicate key \"k5\"".to_string()))
    );
}

#[test]
fn error_messages_stay_short_and_do_not_echo_the_body() {
    let long_key = "k".repeat(10_000);
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","{long_key}":1,"{long_key}":2}}"#);
    let error = parse_body(body.as_bytes()).unwrap_err();
    assert_eq!(error, BodyError::Invalid("duplicate key".to_string()));
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{long_key}"#);
    let error = parse_body(body.as_bytes()).unwrap_err();
    assert_eq!(error.code(), codes::PARSE_ERROR);
    assert!(error.message().len() < 100, "{}", error.message());
    let error = parse_body(b"{\"a\":\"\x01\x02\"}").unwrap_err();
    assert!(error.message().len() < 100);
}

#[test]
fn deep_nesting_is_a_parse_error_not_a_crash() {
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let in_arguments = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{arrays}}}}}"#
    );
    let in_id = format!(r#"{{"jsonrpc":"2.0","id":{arrays},"method":"ping"}}"#);
    let in_name = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{objects}}}}}"#
    );
    let unterminated = "[".repeat(depth);
    for (what, body) in [
        ("arrays", &arrays),
        ("objects", &objects),
        ("in arguments", &in_arguments),
        ("in id", &in_id),
        ("in name", &in_name),
        ("unterminated", &unterminated),
    ] {
        let error = parse_body(body.as_bytes()).unwrap_err();
        assert_eq!(error.code(), codes::PARSE_ERROR, "{what}: {error:?}");
    }
    // Reasonable nesting is fine.
    let shallow = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{}{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert!(parse_body(shallow.as_bytes()).is_ok());
}

#[test]
fn large_bodies_parse() {
    let blob = "x".repeat(1 << 20);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_x","arguments":{{"blob":"{blob}","list":[{}]}}}}}}"#,
        vec!["{\"k\":\"v\\n\"}"; 10_000].join(",")
    );
    assert_eq!(
        parse_body(body.as_bytes()).map(without_arguments),
        Ok(Body::Single(call(
            "tools/call",
            Some("get_x"),
            Some(json!(1))
        )))
    );
}

#[test]
fn body_helpers() {
    let single = parse_body(br#"{"jsonrpc":"2.0","id":"q","method":"ping"}"#).unwrap();
    assert!(!single.is_batch());
    assert_eq!(single.messages().len(), 1);
    assert_eq!(single.answer_id(), Some(&json!("q")));
    let notification = parse_body(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#).unwrap();
    assert_eq!(notification.answer_id(), None);
    let response = parse_body(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).unwrap();
    assert_eq!(response.answer_id(), None);
    let batch = parse_body(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap();
    assert!(batch.is_batch());
    assert_eq!(batch.messages().len(), 1);
    assert_eq!(batch.answer_id(), None);
}

#[test]
fn only_application_json_is_json() {
    let cases: &[(Option<&str>, bool)] = &[
        (Some("application/json"), true),
        (Some("Application/JSON"), true),
        (Some("application/json; charset=utf-8"), true),
        (Some("application/json;charset=UTF-8"), true),
        (Some("  application/json  "), true),
        (Some(" application/json ; charset=utf-8"), true),
        (None, false),
        (Some(""), false),
        (Some("text/plain"), false),
        (Some("text/plain; charset=utf-8"), false),
        (Some("application/json-seq"), false),
        (Some("application/jsonx"), false),
        (Some("application/x-www-form-urlencoded"), false),
        (Some("application/json, text/plain"), false),
        (Some("application/ json"), false),
        (Some("text/json"), false),
    ];
    for (value, expected) in cases {
        assert_eq!(is_json_content_type(*value), *expected, "{value:?}");
    }
}

#[test]
fn mcp_headers_must_match_the_body() {
    let tool =
        parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"}}"#)
            .unwrap();
    let unicode = parse_body(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Hello, 世界"}}"#
            .as_bytes(),
    )
    .unwrap();
    let sentinel = parse_body(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"=?base64?literal?="}}"#,
    )
    .unwrap();
    let list = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
    let response = parse_body(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap();
    let batch = parse_body(
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"other"}}]"#,
    )
    .unwrap();
    let same_batch = parse_body(
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"danger"}}]"#,
    )
    .unwrap();
    // (what, body, Mcp-Method, Mcp-Name, accepted)
    type Case<'a> = (&'a str, &'a Body, Option<&'a str>, Option<&'a str>, bool);
    let cases: &[Case] = &[
        ("no headers", &tool, None, None, true),
        (
            "both match",
            &tool,
            Some("tools/call"),
            Some("danger"),
            true,
        ),
        ("method only", &tool, Some("tools/call"), None, true),
        ("name only", &tool, None, Some("danger"), true),
        (
            "name mismatch",
            &tool,
            Some("tools/call"),
            Some("safe"),
            false,
        ),
        (
            "method mismatch",
            &tool,
            Some("tools/list"),
            Some("danger"),
            false,
        ),
        (
            "method is case-sensitive",
            &tool,
            Some("Tools/Call"),
            None,
            false,
        ),
        (
            "base64 name",
            &tool,
            None,
            Some("=?base64?ZGFuZ2Vy?="),
            true,
        ),
        (
            "base64 name mismatch",
            &tool,
            None,
            Some("=?base64?c2FmZQ==?="),
            false,
        ),
        ("invalid base64", &tool, None, Some("=?base64?!!!?="), false),
        (
            "base64 of invalid UTF-8",
            &tool,
            None,
            Some("=?base64?/w==?="),
            false,
        ),
        (
            "base64 non-ASCII name",
            &unicode,
            None,
            Some("=?base64?SGVsbG8sIOS4lueVjA==?="),
            true,
        ),
        (
            "base64 without padding",
            &unicode,
            None,
            Some("=?base64?SGVsbG8sIOS4lueVjA?="),
            true,
        ),
        (
            "sentinel-looking name sent encoded",
            &sentinel,
            None,
            Some("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
            true,
        ),
        (
            "sentinel-looking name sent plain",
            &sentinel,
            None,
            Some("=?base64?literal?="),
            false,
        ),
        (
            "uppercase markers are not decoded",
            &tool,
            None,
            Some("=?BASE64?ZGFuZ2Vy?="),
            false,
        ),
        (
            "partial marker is literal",
            &tool,
            None,
            Some("=?base64?ZGFuZ2Vy"),
            false,
        ),
        (
            "Mcp-Method is not base64-decoded",
            &tool,
            Some("=?base64?dG9vbHMvY2FsbA==?="),
            None,
            false,
        ),
        (
            "name header for a call without a name",
            &list,
            Some("tools/list"),
            Some("x"),
            false,
        ),
        (
            "method header for a call without a name",
            &list,
            Some("tools/list"),
            None,
            true,
        ),
        (
            "headers with a response",
            &response,
            Some("tools/call"),
            None,
            false,
        ),
        (
            "name header with a response",
            &response,
            None,
            Some("danger"),
            false,
        ),
        ("no headers with a response", &response, None, None, true),
        (
            "batch, one element differs",
            &batch,
            Some("tools/call"),
            Some("danger"),
            false,
        ),
        (
            "batch, method header only",
            &batch,
            Some("tools/call"),
            None,
            true,
        ),
        (
            "batch, all elements match",
            &same_batch,
            Some("tools/call"),
            Some("danger"),
            true,
        ),
    ];
    for (what, body, method, name, ok) in cases {
        let result = check_mcp_headers(body, *method, *name, false);
        assert_eq!(result.is_ok(), *ok, "{what}: {result:?}");
        if let Err(mismatch) = result {
            assert_eq!(mismatch.code(), codes::HEADER_MISMATCH);
        }
    }
}

#[test]
fn a_2026_request_needs_its_routing_headers() {
    let call =
        parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#)
            .unwrap();
    let ping = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
    assert!(check_mcp_headers(&call, None, None, true).is_err());
    assert!(check_mcp_headers(&call, Some("tools/call"), None, true).is_err());
    assert_eq!(
        check_mcp_headers(&call, Some("tools/call"), Some("t"), true),
        Ok(())
    );
    assert_eq!(check_mcp_headers(&ping, Some("ping"), None, true), Ok(()));
    assert!(check_mcp_headers(&ping, None, None, true).is_err());
    // Older protocol versions: absent headers are not checked.
    assert_eq!(check_mcp_headers(&call, None, None, false), Ok(()));
}
