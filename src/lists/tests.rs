//! List filtering, JSON and SSE.

use super::*;
use serde_json::json;

/// What the host's predicate does: judge an item by the field its kind
/// names, against an allow list.
fn allow(allowed: &'static [&'static str]) -> impl Fn(&Item) -> bool {
    move |item| item.key().is_some_and(|v| allowed.contains(&v))
}

fn keep_all(_: &Item) -> bool {
    true
}

fn pending(id: Value, kind: ListKind) -> PendingLists {
    [(id, kind)].into_iter().collect()
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("test output is JSON")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("test output is UTF-8")
}

// As the official MCP Python SDK (FastMCP, pydantic) writes them: compact,
// keys in model order, `exclude_none`.
const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_weather","description":"Get the current weather (°C) for a city","inputSchema":{"properties":{"city":{"title":"City","type":"string"}},"required":["city"],"title":"get_weatherArguments","type":"object"}},{"name":"delete_repo","description":"Delete a repository","inputSchema":{"properties":{"repo":{"title":"Repo","type":"string"}},"required":["repo"],"title":"delete_repoArguments","type":"object"}},{"name":"search_docs","description":"Search the docs","inputSchema":{"properties":{"query":{"title":"Query","type":"string"},"limit":{"default":10,"title":"Limit","type":"integer"}},"required":["query"],"title":"search_docsArguments","type":"object"}}],"nextCursor":"abc","_meta":{"trace":"t-1"}}}"#;

const PROMPTS: &str = r#"{"jsonrpc":"2.0","id":"p-7","result":{"prompts":[{"name":"summarize","description":"Summarize a text","arguments":[{"name":"text","required":true}]},{"name":"admin_report","description":"Internal report","arguments":[]}]}}"#;

const RESOURCES: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"file:///docs/readme.md","name":"readme","mimeType":"text/markdown"},{"uri":"file:///secrets/keys.txt","name":"keys","mimeType":"text/plain"}]}}"#;

const TEMPLATES: &str = r#"{"jsonrpc":"2.0","id":4,"result":{"resourceTemplates":[{"uriTemplate":"users://{id}/profile","name":"profile"},{"uriTemplate":"admin://{id}/audit","name":"audit"}]}}"#;

#[test]
fn list_methods_map_to_kinds_and_item_keys() {
    let cases = [
        ("tools/list", ListKind::Tools, "tools"),
        ("prompts/list", ListKind::Prompts, "prompts"),
        ("resources/list", ListKind::Resources, "resources"),
        (
            "resources/templates/list",
            ListKind::ResourceTemplates,
            "resourceTemplates",
        ),
    ];
    for (method, kind, key) in cases {
        assert_eq!(ListKind::from_method(method), Some(kind));
        assert_eq!(kind.items_key(), key);
    }
    assert_eq!(ListKind::from_method("tools/call"), None);
    assert_eq!(ListKind::from_method("resources/read"), None);
}

#[test]
fn keep_all_returns_identical_bytes() {
    // Pretty-printed on purpose: untouched answers keep their exact bytes.
    let body = serde_json::to_vec_pretty(&parse(TOOLS.as_bytes())).unwrap();
    let out = filter_json(&body, &pending(json!(1), ListKind::Tools), &keep_all).unwrap();
    assert_eq!(
        out,
        Filtered {
            body,
            removed: 0,
            changed: false
        }
    );
}

#[test]
fn forbidden_tools_are_removed_and_other_fields_kept() {
    let keep = allow(&["get_weather", "search_docs"]);
    let out = filter_json(TOOLS.as_bytes(), &pending(json!(1), ListKind::Tools), &keep).unwrap();
    assert!(out.changed);
    assert_eq!(out.removed, 1);
    let mut expected = parse(TOOLS.as_bytes());
    expected["result"]["tools"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    assert_eq!(parse(&out.body), expected);
    // Kept items are copied verbatim, keys in their original order.
    assert_eq!(
        text(&out.body),
        TOOLS.replace(
            r#"{"name":"delete_repo","description":"Delete a repository","inputSchema":{"properties":{"repo":{"title":"Repo","type":"string"}},"required":["repo"],"title":"delete_repoArguments","type":"object"}},"#,
            ""
        )
    );
}

#[test]
fn all_tools_forbidden_leaves_an_empty_list() {
    let out = filter_json(
        TOOLS.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&[]),
    )
    .unwrap();
    assert_eq!(out.removed, 3);
    assert_eq!(parse(&out.body)["result"]["tools"], json!([]));
    assert_eq!(parse(&out.body)["result"]["nextCursor"], json!("abc"));
}

#[test]
fn prompts_are_filtered_by_name() {
    let out = filter_json(
        PROMPTS.as_bytes(),
        &pending(json!("p-7"), ListKind::Prompts),
        &allow(&["summarize"]),
    )
    .unwrap();
    assert_eq!(out.removed, 1);
    assert_eq!(
        parse(&out.body)["result"]["prompts"],
        json!([{"name":"summarize","description":"Summarize a text","arguments":[{"name":"text","required":true}]}])
    );
}

#[test]
fn resources_are_filtered_by_uri() {
    let out = filter_json(
        RESOURCES.as_bytes(),
        &pending(json!(3), ListKind::Resources),
        &allow(&["file:///docs/readme.md"]),
    )
    .unwrap();
    assert_eq!(out.removed, 1);
    assert_eq!(
        parse(&out.body)["result"]["resources"],
        json!([{"uri":"file:///docs/readme.md","name":"readme","mimeType":"text/markdown"}])
    );
}

#[test]
fn resource_templates_are_filtered_by_uri_template() {
    let out = filter_json(
        TEMPLATES.as_bytes(),
        &pending(json!(4), ListKind::ResourceTemplates),
        &allow(&["users://{id}/profile"]),
    )
    .unwrap();
    assert_eq!(out.removed, 1);
    assert_eq!(
        parse(&out.body)["result"]["resourceTemplates"],
        json!([{"uriTemplate":"users://{id}/profile","name":"profile"}])
    );
}

#[test]
fn public_cache_scope_becomes_private_when_items_are_removed() {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}],"cacheScope":"public","ttlMs":60000}}"#;
    let out = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&["a"]),
    )
    .unwrap();
    assert_eq!(
        text(&out.body),
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"cacheScope":"private","ttlMs":60000}}"#
    );
}

#[test]
fn cache_scope_becomes_private_even_when_nothing_is_removed() {
    // An admin's full list is still a list judged for that caller; one
    // already private is left as it came.
    for (scope, changed) in [("public", true), ("private", false)] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"a"}}],"cacheScope":"{scope}"}}}}"#
        );
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&["a"]),
        )
        .unwrap();
        assert_eq!(out.changed, changed, "{scope}");
        assert_eq!(out.removed, 0);
        assert_eq!(parse(&out.body)["result"]["cacheScope"], "private");
        assert_eq!(parse(&out.body)["result"]["tools"], json!([{"name": "a"}]));
    }
}

#[test]
fn absent_cache_scope_is_not_added() {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}"#;
    let out = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&["a"]),
    )
    .unwrap();
    assert!(parse(&out.body)["result"].get("cacheScope").is_none());
}

#[test]
fn error_response_passes_untouched() {
    let body = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"tools unavailable"}}"#;
    let out = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&[]),
    )
    .unwrap();
    assert!(!out.changed);
    assert_eq!(out.body, body.as_bytes());
}

#[test]
fn list_answer_under_another_id_is_recognised_by_its_shape() {
    let out = filter_json(
        TOOLS.as_bytes(),
        &pending(json!(2), ListKind::Tools),
        &allow(&[]),
    )
    .unwrap();
    assert_eq!(out.removed, 3);
    // And on a stream whose requests were never seen (a GET stream).
    let out = filter_json(TOOLS.as_bytes(), &PendingLists::new(), &allow(&[])).unwrap();
    assert_eq!(out.removed, 3);
}

#[test]
fn other_answers_under_other_ids_pass_untouched() {
    let call = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"x"}],"capabilities":{"tools":{}}}}"#;
    let out = filter_json(call.as_bytes(), &PendingLists::new(), &allow(&[])).unwrap();
    assert!(!out.changed);
    assert_eq!(out.body, call.as_bytes());
}

#[test]
fn string_id_matches_equal_looking_number() {
    // An upstream that echoes `1` as `"1"`: still the pending list, so
    // its items member must be an array.
    let odd = r#"{"jsonrpc":"2.0","id":"1","result":{"tools":{"name":"x"}}}"#;
    let refused = filter_json(
        odd.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&[]),
    );
    assert!(matches!(refused, Err(ListError::Invalid(_))));
    let echoed = TOOLS.replacen(r#""id":1"#, r#""id":"1""#, 1);
    let out = filter_json(
        echoed.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&[]),
    )
    .unwrap();
    assert_eq!(out.removed, 3);
}

#[test]
fn numeric_ids_match_by_value_across_forms() {
    // A caller that sends `1.0` must not get its list unfiltered because
    // the server echoed `1`.
    let out = filter_json(
        TOOLS.as_bytes(),
        &pending(json!(1.0), ListKind::Tools),
        &allow(&[]),
    )
    .unwrap();
    assert_eq!(out.removed, 3);
}

#[test]
fn result_of_another_kind_is_filtered_as_what_it_is() {
    // A pending tools/list id answered with prompts: judged as prompts.
    let body = PROMPTS.replace(r#""p-7""#, "1");
    let out = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&["summarize"]),
    )
    .unwrap();
    assert_eq!(out.removed, 1);
    assert!(!text(&out.body).contains("admin_report"));
}

#[test]
fn batch_filters_each_list_result_and_passes_other_results() {
    let call = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Sunny, 21°C"}],"isError":false}}"#;
    let body = format!("[{TOOLS}, {call},\n {RESOURCES}]");
    let pending: PendingLists = [(json!(1), ListKind::Tools), (json!(3), ListKind::Resources)]
        .into_iter()
        .collect();
    let keep = allow(&["get_weather", "file:///docs/readme.md"]);
    let out = filter_json(body.as_bytes(), &pending, &keep).unwrap();
    assert_eq!(out.removed, 3);
    let v = parse(&out.body);
    let names: Vec<&str> = v[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_weather"]);
    assert_eq!(v[1], parse(call.as_bytes()));
    assert_eq!(v[2]["result"]["resources"].as_array().unwrap().len(), 1);
    // Only item arrays are rebuilt: what stands between the batch's
    // elements passes as it came.
    assert!(text(&out.body).starts_with(r#"[{"jsonrpc""#));
    assert!(text(&out.body).contains(&format!("\"t-1\"}}}}}}, {call},\n {{")));
}

#[test]
fn non_object_items_are_removed() {
    let body =
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},"a",null,[{"name":"a"}]]}}"#;
    let out = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&["a"]),
    )
    .unwrap();
    assert_eq!(out.removed, 3);
    assert_eq!(parse(&out.body)["result"]["tools"], json!([{"name":"a"}]));
}

#[test]
fn rewrite_keeps_key_order_number_text_and_escapes() {
    let body = r#"{ "jsonrpc": "2.0", "id": 1, "result": { "tools": [ { "name": "a", "inputSchema": { "type": "object", "maximum": 1.0e3, "big": 123456789012345678901234567890 }, "description": "say \"hi\"  now\t" }, { "name": "b" } ] } }"#;
    let out = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&["a"]),
    )
    .unwrap();
    assert_eq!(
        text(&out.body),
        r#"{ "jsonrpc": "2.0", "id": 1, "result": { "tools": [{ "name": "a", "inputSchema": { "type": "object", "maximum": 1.0e3, "big": 123456789012345678901234567890 }, "description": "say \"hi\"  now\t" }] } }"#
    );
}

#[test]
fn escaped_member_names_are_recognised() {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"t\u006fols":[{"name":"a"},{"name":"b"}]}}"#;
    let out = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &allow(&["a"]),
    )
    .unwrap();
    assert_eq!(out.removed, 1);
    assert_eq!(parse(&out.body)["result"]["tools"], json!([{"name":"a"}]));
}

#[test]
fn invalid_json_answer_is_invalid() {
    for body in [
        &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{"[..],
        b"",
        b"\xff",
        b"{} {}",
        b"{\"a\":NaN}",
    ] {
        let err = filter_json(body, &pending(json!(1), ListKind::Tools), &keep_all).unwrap_err();
        assert!(matches!(err, ListError::Invalid(_)), "{err}");
    }
}

#[test]
fn answer_that_is_not_json_rpc_responses_is_invalid() {
    for body in [
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"[]"#,
        r#"[1]"#,
        r#""tools""#,
        r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":5,"method":"ping"}]"#,
    ] {
        let err = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &keep_all,
        )
        .unwrap_err();
        assert!(matches!(err, ListError::Invalid(_)), "{body}");
    }
}

#[test]
fn duplicate_key_anywhere_is_invalid() {
    // First-wins and last-wins readers would see different ids or names.
    for body in [
        r#"{"jsonrpc":"2.0","id":2,"id":1,"result":{"tools":[]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"b"}]}}"#,
    ] {
        let err = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &keep_all,
        )
        .unwrap_err();
        assert!(
            matches!(err, ListError::Invalid(ref m) if m.contains("duplicate")),
            "{err}"
        );
    }
}

#[test]
fn items_that_are_not_an_array_are_invalid() {
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"a"}}}"#;
    let err = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &keep_all,
    )
    .unwrap_err();
    assert!(matches!(err, ListError::Invalid(_)));
}

#[test]
fn deeply_nested_answer_is_invalid_not_a_crash() {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"a","x":{}{}}}]}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = filter_json(
        body.as_bytes(),
        &pending(json!(1), ListKind::Tools),
        &keep_all,
    )
    .unwrap_err();
    assert!(matches!(err, ListError::Invalid(_)));
}

#[test]
fn error_display_names_the_cause() {
    assert_eq!(
        ListError::Invalid("not valid JSON".into()).to_string(),
        "list answer cannot be filtered: not valid JSON"
    );
    assert_eq!(
        ListError::TooLarge.to_string(),
        "list answer event exceeds the size limit"
    );
}

// ---- SSE -------------------------------------------------------------

const PROGRESS: &str = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.5,"total":1.0,"message":"listing…"}}"#;

/// A Python SDK stream (sse-starlette, CRLF): a progress notification,
/// a comment ping, then the list result with an `id:` field.
fn sse_sample() -> String {
    format!(
        "event: message\r\ndata: {PROGRESS}\r\n\r\n: ping - 2025-06-18 10:00:00\r\n\r\nid: ev-2\r\nevent: message\r\ndata: {TOOLS}\r\n\r\n"
    )
}

fn sse_sample_filtered() -> String {
    let tools = TOOLS.replace(
        r#"{"name":"delete_repo","description":"Delete a repository","inputSchema":{"properties":{"repo":{"title":"Repo","type":"string"}},"required":["repo"],"title":"delete_repoArguments","type":"object"}},"#,
        "",
    );
    format!(
        "event: message\r\ndata: {PROGRESS}\r\n\r\n: ping - 2025-06-18 10:00:00\r\n\r\nid: ev-2\r\nevent: message\r\ndata: {tools}\r\n\r\n"
    )
}

fn run_sse(
    chunks: &[&[u8]],
    pending: PendingLists,
    max: usize,
) -> Result<(Vec<u8>, usize), ListError> {
    let keep = allow(&["get_weather", "search_docs"]);
    let mut filter = SseFilter::new(pending, max);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(filter.push(chunk, &keep)?);
    }
    out.extend(filter.finish(&keep)?);
    Ok((out, filter.removed()))
}

fn tools_1() -> PendingLists {
    pending(json!(1), ListKind::Tools)
}

#[test]
fn sse_list_result_after_progress_notification_is_filtered() {
    let sample = sse_sample();
    let (out, removed) = run_sse(&[sample.as_bytes()], tools_1(), 1 << 20).unwrap();
    assert_eq!(text(&out), sse_sample_filtered());
    assert_eq!(removed, 1);
}

#[test]
fn sse_keep_all_passes_bytes_unchanged() {
    let sample = sse_sample();
    let mut filter = SseFilter::new(tools_1(), 1 << 20);
    let mut out = filter.push(sample.as_bytes(), &keep_all).unwrap();
    out.extend(filter.finish(&keep_all).unwrap());
    assert_eq!(out, sample.as_bytes());
    assert_eq!(filter.removed(), 0);
}

#[test]
fn sse_list_events_under_other_ids_are_filtered_other_events_pass() {
    let sample = sse_sample();
    let (out, removed) = run_sse(
        &[sample.as_bytes()],
        pending(json!(9), ListKind::Tools),
        1 << 20,
    )
    .unwrap();
    assert_eq!(out, sse_sample_filtered().as_bytes());
    assert_eq!(removed, 1);
    let call = format!("event: message\r\ndata: {PROGRESS}\r\n\r\n");
    let (out, _) = run_sse(&[call.as_bytes()], PendingLists::new(), 1 << 20).unwrap();
    assert_eq!(out, call.as_bytes());
}

#[test]
fn sse_complete_events_are_emitted_as_soon_as_complete() {
    let keep = allow(&["get_weather"]);
    let mut filter = SseFilter::new(tools_1(), 1 << 20);
    let progress = format!("event: message\r\ndata: {PROGRESS}\r\n\r\n");
    assert_eq!(
        filter.push(progress.as_bytes(), &keep).unwrap(),
        progress.as_bytes()
    );
    // Half a list event: nothing to emit yet.
    let list = format!("event: message\r\ndata: {TOOLS}\r\n\r\n");
    let (head, tail) = list.as_bytes().split_at(40);
    assert!(filter.push(head, &keep).unwrap().is_empty());
    let out = filter.push(tail, &keep).unwrap();
    assert_eq!(filter.removed(), 2);
    assert!(text(&out).starts_with("event: message\r\ndata: {"));
    assert!(filter.finish(&keep).unwrap().is_empty());
}

#[test]
fn sse_keeps_comments_id_event_and_retry_fields_in_order() {
    let stream =
        format!(": before\nretry: 3000\nid: 42\ndata: {TOOLS}\n: after\nevent: message\n\n");
    let (out, _) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
    let out = text(&out);
    let lines: Vec<&str> = out.split('\n').collect();
    assert_eq!(lines[..3], [": before", "retry: 3000", "id: 42"]);
    assert!(lines[3].starts_with("data: {\"jsonrpc\":\"2.0\",\"id\":1,"));
    assert!(!lines[3].contains("delete_repo"));
    assert_eq!(lines[4..], [": after", "event: message", "", ""]);
}

#[test]
fn sse_split_at_every_offset_matches_unsplit() {
    let sample = sse_sample();
    let bytes = sample.as_bytes();
    let whole = run_sse(&[bytes], tools_1(), 1 << 20).unwrap();
    // Offsets fall inside lines, inside CRLFs and inside "°" and "…".
    for at in 0..=bytes.len() {
        let (a, b) = bytes.split_at(at);
        assert_eq!(
            run_sse(&[a, b], tools_1(), 1 << 20).unwrap(),
            whole,
            "split at {at}"
        );
    }
}

#[test]
fn sse_one_byte_at_a_time_matches_unsplit() {
    let sample = sse_sample();
    let bytes = sample.as_bytes();
    let whole = run_sse(&[bytes], tools_1(), 1 << 20).unwrap();
    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run_sse(&chunks, tools_1(), 1 << 20).unwrap(), whole);
}

#[test]
fn sse_crlf_split_between_cr_and_lf_is_one_line_end() {
    let keep = allow(&["get_weather"]);
    let mut filter = SseFilter::new(tools_1(), 1 << 20);
    // The blank line's CR arrives alone: the event is not over until we
    // know whether an LF follows.
    let head = format!("data: {PROGRESS}\r\n\r");
    assert!(filter.push(head.as_bytes(), &keep).unwrap().is_empty());
    let out = filter.push(b"\ndata: ", &keep).unwrap();
    assert_eq!(out, format!("data: {PROGRESS}\r\n\r\n").as_bytes());
    // And a CR split from the LF that ends a data line does not end the event.
    let mut filter = SseFilter::new(tools_1(), 1 << 20);
    let mut out = filter
        .push(format!("data: {TOOLS}\r").as_bytes(), &keep)
        .unwrap();
    out.extend(filter.push(b"\n", &keep).unwrap());
    assert!(out.is_empty());
    out.extend(filter.push(b"\r\n", &keep).unwrap());
    assert_eq!(filter.removed(), 2);
    assert!(text(&out).ends_with("}}\r\n\r\n"));
}

#[test]
fn sse_lf_and_cr_only_line_ends_are_understood() {
    for end in ["\n", "\r"] {
        let stream =
            format!("event: message{end}data: {PROGRESS}{end}{end}data: {TOOLS}{end}{end}");
        let (out, removed) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
        assert_eq!(removed, 1);
        let out = text(&out);
        assert!(out.starts_with(&format!(
            "event: message{end}data: {PROGRESS}{end}{end}data: "
        )));
        assert!(out.ends_with(&format!("}}}}{end}{end}")));
        assert!(!out.contains("delete_repo"));
    }
}

#[test]
fn sse_multi_line_data_is_joined_and_reemitted_in_its_lines() {
    let pretty = serde_json::to_string_pretty(&parse(TOOLS.as_bytes())).unwrap();
    for end in ["\n", "\r\n"] {
        let mut stream = format!("event: message{end}");
        for (n, line) in pretty.lines().enumerate() {
            // One leading space is stripped, and only one: mix both forms.
            if n % 2 == 0 {
                stream.push_str(&format!("data: {line}{end}"));
            } else {
                stream.push_str(&format!("data:{line}{end}"));
            }
        }
        stream.push_str(&format!(": after{end}{end}"));
        let (out, removed) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
        assert_eq!(removed, 1);
        let out = text(&out);
        let lines: Vec<&str> = out.split(end).collect();
        assert_eq!(lines[0], "event: message");
        assert_eq!(lines[lines.len() - 3..], [": after", "", ""]);
        let data: Vec<&str> = lines[1..lines.len() - 3]
            .iter()
            .map(|line| line.strip_prefix("data: ").expect("a data line"))
            .collect();
        // The kept text keeps its lines; the removed item's are gone.
        assert!(
            data.len() > 1 && data.len() < pretty.lines().count(),
            "{out}"
        );
        let kept = pretty
            .lines()
            .find(|l| l.contains("Get the current weather"));
        assert!(data.contains(&kept.unwrap()), "{out}");
        let mut expected = parse(TOOLS.as_bytes());
        expected["result"]["tools"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        assert_eq!(parse(data.join("\n").as_bytes()), expected);
    }
}

#[test]
fn sse_event_too_large_while_incomplete_is_too_large() {
    let keep = allow(&["get_weather"]);
    let mut filter = SseFilter::new(tools_1(), 100);
    assert!(filter
        .push(b"data: {\"jsonrpc\":\"2.0\",", &keep)
        .unwrap()
        .is_empty());
    let err = filter.push(&[b' '; 100], &keep).unwrap_err();
    assert_eq!(err, ListError::TooLarge);
    // The error sticks: nothing unfiltered leaks out afterwards.
    assert_eq!(
        filter.push(b"\n\n", &keep).unwrap_err(),
        ListError::TooLarge
    );
    assert_eq!(filter.finish(&keep).unwrap_err(), ListError::TooLarge);
}

#[test]
fn sse_complete_event_over_the_limit_is_too_large_however_chunked() {
    let stream = format!("data: {TOOLS}\n\n");
    let max = stream.len() - 1;
    assert_eq!(
        run_sse(&[stream.as_bytes()], tools_1(), max).unwrap_err(),
        ListError::TooLarge
    );
    let chunks: Vec<&[u8]> = stream.as_bytes().chunks(7).collect();
    assert_eq!(
        run_sse(&chunks, tools_1(), max).unwrap_err(),
        ListError::TooLarge
    );
    assert!(run_sse(&[stream.as_bytes()], tools_1(), stream.len()).is_ok());
}

#[test]
fn sse_invalid_json_for_pending_id_is_invalid() {
    let stream =
        "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[\r\n\r\n";
    let err = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap_err();
    assert!(matches!(err, ListError::Invalid(_)), "{err}");
}

#[test]
fn sse_non_json_data_is_invalid_since_its_id_is_unknown() {
    let err = run_sse(&[b"data: hello\n\n"], tools_1(), 1 << 20).unwrap_err();
    assert!(matches!(err, ListError::Invalid(_)));
}

#[test]
fn sse_priming_event_with_empty_data_passes() {
    let stream =
        format!("id: prime-0\ndata:\n\nid: prime-1\ndata: \nretry: 1000\n\ndata: {PROGRESS}\n\n");
    let (out, _) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
    assert_eq!(out, stream.as_bytes());
}

#[test]
fn sse_trailing_event_is_filtered_at_finish_without_adding_a_blank_line() {
    let stream = format!("data: {PROGRESS}\n\nid: 7\ndata: {TOOLS}");
    let keep = allow(&["get_weather", "search_docs"]);
    let mut filter = SseFilter::new(tools_1(), 1 << 20);
    let first = filter.push(stream.as_bytes(), &keep).unwrap();
    assert_eq!(first, format!("data: {PROGRESS}\n\n").as_bytes());
    let rest = filter.finish(&keep).unwrap();
    let rest = text(&rest);
    assert!(rest.starts_with("id: 7\ndata: {\"jsonrpc\""), "{rest}");
    assert!(rest.ends_with("}}") && !rest.contains("delete_repo"));
    assert_eq!(filter.removed(), 1);
    // A lone CR at the very end counts as the line end it is.
    let (out, _) = run_sse(
        &[format!("data: {PROGRESS}\r").as_bytes()],
        tools_1(),
        1 << 20,
    )
    .unwrap();
    assert_eq!(out, format!("data: {PROGRESS}\r").as_bytes());
}

#[test]
fn sse_push_after_finish_is_refused() {
    let mut filter = SseFilter::new(tools_1(), 1 << 20);
    assert!(filter.finish(&keep_all).unwrap().is_empty());
    assert!(filter.finish(&keep_all).unwrap().is_empty());
    assert!(matches!(
        filter.push(b"data: {}\n\n", &keep_all),
        Err(ListError::Invalid(_))
    ));
}

#[test]
fn sse_leading_byte_order_mark_does_not_hide_data() {
    let stream = format!("\u{FEFF}data: {TOOLS}\n\n");
    let bytes = stream.as_bytes();
    for at in 0..6 {
        let (a, b) = bytes.split_at(at);
        let (out, removed) = run_sse(&[a, b], tools_1(), 1 << 20).unwrap();
        assert_eq!(removed, 1, "split at {at}");
        assert!(out.starts_with(b"\xEF\xBB\xBFdata: {"));
    }
}

#[test]
fn sse_batch_in_one_event_filters_each_pending_result() {
    let stream = format!("data: [{TOOLS},{PROGRESS},{PROMPTS}]\n\n");
    let pending: PendingLists = [
        (json!(1), ListKind::Tools),
        (json!("p-7"), ListKind::Prompts),
    ]
    .into_iter()
    .collect();
    let (out, removed) = run_sse(&[stream.as_bytes()], pending, 1 << 20).unwrap();
    // delete_repo, and both prompts (none is allowed).
    assert_eq!(removed, 3);
    let v = parse(
        text(&out)
            .trim_end()
            .strip_prefix("data: ")
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(v[1], parse(PROGRESS.as_bytes()));
    assert_eq!(v[2]["result"]["prompts"], json!([]));
}

#[test]
fn sse_repeated_answer_for_the_same_id_is_filtered_too() {
    let stream = format!("data: {TOOLS}\n\ndata: {TOOLS}\n\n");
    let (out, removed) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
    assert_eq!(removed, 2);
    assert!(!text(&out).contains("delete_repo"));
}

#[test]
fn sse_server_request_and_error_response_pass() {
    let stream = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"sampling/createMessage\",\"params\":{}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32603,\"message\":\"x\"}}\n\n";
    let (out, _) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
    assert_eq!(out, stream.as_bytes());
}

/// Comparisons of pending ids made while the answers of a batch of `n`
/// `tools/list` requests are recorded and then filtered, as one JSON batch
/// answer and as an event stream of `n` answers; the answers come back in
/// another order than the requests went.
fn id_comparisons(n: usize) -> (u64, u64) {
    let ids = |n: usize| (0..n).map(move |i| (i * 7919) % n);
    let answer = |id: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"get_weather"}},{{"name":"delete_repo"}}]}}}}"#
        )
    };
    let keep = allow(&["get_weather"]);
    comparisons::take();

    let pending: PendingLists = (0..n).map(|i| (json!(i), ListKind::Tools)).collect();
    let batch = format!("[{}]", ids(n).map(answer).collect::<Vec<_>>().join(","));
    let out = filter_json(batch.as_bytes(), &pending, &keep).unwrap();
    assert_eq!(out.removed, n);
    let json = comparisons::take();

    let pending: PendingLists = (0..n).map(|i| (json!(i), ListKind::Tools)).collect();
    let mut filter = SseFilter::new(pending, 1 << 20);
    let mut removed = 0;
    for id in ids(n) {
        let event = format!("event: message\ndata: {}\n\n", answer(id));
        let out = filter.push(event.as_bytes(), &keep).unwrap();
        removed += usize::from(out.len() < event.len());
    }
    assert_eq!(removed, n);
    (json, comparisons::take())
}

/// Issue 12 case 11: 9,000 answers in one batch took four times as long as
/// 2,000 because each answer's id was looked for by a scan of the pending
/// ones. Counted, not timed: with 16 times the messages the comparisons of
/// ids may grow 16 times for the messages, and by the ratio of the
/// logarithms (about 1.4) for a look-up in a sorted tree; doubling that
/// (at most 32 times) leaves room and still fails a scan per message by far
/// (the square: 256 times).
#[test]
fn finding_pending_ids_grows_with_the_batch_not_with_its_square() {
    let (json_small, sse_small) = id_comparisons(1_000);
    let (json_large, sse_large) = id_comparisons(16_000);
    for (what, small, large) in [
        ("JSON batch", json_small, json_large),
        ("event stream", sse_small, sse_large),
    ] {
        assert!(small > 0, "{what}: the comparisons are counted");
        assert!(
            large <= 32 * small,
            "{what}: {small} comparisons for 1,000 answers, {large} for 16,000"
        );
        // And per answer, a few per level of a tree of 16,000 ids at most.
        assert!(
            large / 16_000 <= 4 * 14 + 16,
            "{what}: {} comparisons per answer",
            large / 16_000
        );
    }
}
