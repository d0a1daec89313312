//! The README's configuration reference is checked against the real
//! configuration types, so the two cannot drift apart.

use mcp_authz::config::{
    defaults, CallField, Gateway, Policy, DPOP_NONCE_KEYS, INTROSPECTION_KEYS, MATCH_KEYS,
    PROVIDER_KEYS, PUBLISH_KEYS, REMOTE_JWKS_KEYS, RULE_KEYS, SERVER_KEYS, SHARED_KEYS,
    TOP_LEVEL_KEYS, UPSTREAM_TOKEN_KEYS,
};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// Rows of the table that follows `heading`: (key, default column).
fn table(readme: &str, heading: &str) -> Vec<(String, String)> {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no table headed {heading:?}"));
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[3].to_string())
        })
        .collect()
}

fn keys(rows: &[(String, String)]) -> Vec<&str> {
    rows.iter().map(|(k, _)| k.as_str()).collect()
}

fn default_of<'a>(rows: &'a [(String, String)], key: &str) -> &'a str {
    &rows.iter().find(|(k, _)| k == key).expect(key).1
}

#[test]
fn readme_lists_every_configuration_key_and_no_other() {
    let text = readme();
    assert_eq!(keys(&table(&text, "Top level:")), TOP_LEVEL_KEYS);
    assert_eq!(keys(&table(&text, "`providers[]`:")), PROVIDER_KEYS);
    assert_eq!(
        keys(&table(&text, "`providers[].jwks.remote`:")),
        REMOTE_JWKS_KEYS
    );
    assert_eq!(keys(&table(&text, "`rules[]`:")), RULE_KEYS);
    assert_eq!(
        keys(&table(&text, "`providers[].dpop_nonce`:")),
        DPOP_NONCE_KEYS
    );
    assert_eq!(
        keys(&table(
            &text,
            "`providers[].introspection` (the client keys — `client_id`, `client_auth`, `client_secret`, `client_secret_env`, `client_key`, `client_key_env` — are the same in `upstream_token`):"
        )),
        INTROSPECTION_KEYS
    );
    assert_eq!(
        keys(&table(&text, "`upstream_token`:")),
        UPSTREAM_TOKEN_KEYS
    );
    assert_eq!(keys(&table(&text, "`servers[]`:")), SERVER_KEYS);
    assert_eq!(keys(&table(&text, "`servers[].match`:")), MATCH_KEYS);
    assert_eq!(keys(&table(&text, "`publish`:")), PUBLISH_KEYS);
    let fields: Vec<&str> = CallField::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(keys(&table(&text, "The fields:")), fields);
    // Every key a server may set is a top-level key of one server, and the
    // shared keys are top-level keys too.
    for key in SERVER_KEYS.iter().chain(SHARED_KEYS) {
        let own = ["name", "match", "audiences"].contains(key);
        assert!(own || TOP_LEVEL_KEYS.contains(key), "{key}");
    }
}

#[test]
fn readme_example_of_several_servers_is_accepted() {
    let text = readme();
    let start = text
        .find("### Several servers behind one filter")
        .expect("servers section");
    let block = &text[start..];
    let json_start = block.find("```json\n").expect("example") + 8;
    let json_end = json_start + block[json_start..].find("```").expect("end of example");
    let gateway = Gateway::from_json(&block[json_start..json_end])
        .expect("the README's servers example must be valid");
    let names: Vec<&str> = gateway
        .servers
        .iter()
        .filter_map(|s| s.policy.server_name.as_deref())
        .collect();
    assert_eq!(names, ["github", "jira"]);
}

#[test]
fn readme_defaults_match_the_code() {
    let text = readme();
    let top = table(&text, "Top level:");
    let provider = table(&text, "`providers[]`:");
    let remote = table(&text, "`providers[].jwks.remote`:");
    assert_eq!(
        default_of(&top, "max_body_bytes"),
        format!("`{}`", defaults::MAX_BODY_BYTES)
    );
    assert_eq!(
        default_of(&provider, "clock_skew_seconds"),
        format!("`{}`", defaults::CLOCK_SKEW_SECONDS)
    );
    assert_eq!(
        default_of(&provider, "roles_claims"),
        format!("`[\"{}\"]`", defaults::ROLES_CLAIM)
    );
    assert_eq!(
        default_of(&provider, "scopes_claim"),
        format!("`\"{}\"`", defaults::SCOPES_CLAIM)
    );
    let types: Vec<String> = defaults::TOKEN_TYPES
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect();
    assert_eq!(
        default_of(&provider, "token_types"),
        format!("`[{}]`", types.join(", "))
    );
    assert_eq!(default_of(&provider, "require_token_type"), "`false`");
    assert_eq!(default_of(&provider, "dpop"), "`\"off\"`");
    assert_eq!(
        default_of(&provider, "dpop_iat_window_seconds"),
        format!("`{}`", defaults::DPOP_IAT_WINDOW_SECONDS)
    );
    assert_eq!(
        default_of(
            &table(&text, "`providers[].dpop_nonce`:"),
            "lifetime_seconds"
        ),
        format!("`{}`", defaults::DPOP_NONCE_LIFETIME_SECONDS)
    );
    assert_eq!(
        default_of(&remote, "refresh_seconds"),
        format!("`{}`", defaults::REFRESH_SECONDS)
    );
    assert_eq!(
        default_of(&remote, "timeout_ms"),
        format!("`{}`", defaults::TIMEOUT_MS)
    );
    let introspection = table(
        &text,
        "`providers[].introspection` (the client keys — `client_id`, `client_auth`, `client_secret`, `client_secret_env`, `client_key`, `client_key_env` — are the same in `upstream_token`):",
    );
    let upstream = table(&text, "`upstream_token`:");
    for rows in [&introspection, &upstream] {
        assert_eq!(
            default_of(rows, "timeout_ms"),
            format!("`{}`", defaults::TIMEOUT_MS)
        );
    }
    assert_eq!(
        default_of(&introspection, "cache_seconds"),
        format!("`{}`", defaults::INTROSPECTION_CACHE_SECONDS)
    );
    assert_eq!(
        default_of(&upstream, "header"),
        format!("`\"{}\"`", defaults::UPSTREAM_TOKEN_HEADER)
    );
    assert_eq!(default_of(&upstream, "cache"), "`true`");

    // The defaults the README states for the rest, as the parser applies them.
    let policy = Policy::from_json(
        r#"{"resource":"https://mcp.example.com/mcp",
            "providers":[{"issuer":"https://idp","jwks":{"remote":{"cluster":"idp"}}}],
            "rules":[{"effect":"allow","methods":["ping"]}]}"#,
    )
    .expect("minimal configuration");
    assert_eq!(default_of(&top, "filter_lists"), "`true`");
    assert!(policy.filter_lists);
    assert_eq!(default_of(&top, "token_forwarding"), "`\"strip\"`");
    assert_eq!(
        policy.token_forwarding,
        mcp_authz::config::TokenForwarding::Strip
    );
    assert_eq!(default_of(&top, "mode"), "`\"enforce\"`");
    assert_eq!(default_of(&top, "unmatched"), "`\"refuse\"`");
    assert_eq!(
        default_of(&table(&text, "`servers[].match`:"), "path_prefix"),
        "`\"/\"`"
    );
    assert_eq!(
        default_of(&table(&text, "`publish`:"), "filter_state"),
        "`true`"
    );
    assert_eq!(policy.mode, mcp_authz::config::Mode::Enforce);
    assert_eq!(
        policy.authorization_servers,
        vec!["https://idp".to_string()]
    );
    assert_eq!(
        policy.providers[0].audiences,
        vec!["https://mcp.example.com/mcp".to_string()]
    );
    assert_eq!(policy.rules[0].name, "rules[0]");
    assert_eq!(
        default_of(&table(&text, "`rules[]`:"), "name"),
        "`rules[N]`"
    );
}

#[test]
fn readme_example_configuration_is_accepted() {
    let text = readme();
    let start = text
        .find("## Configuration reference")
        .expect("reference section");
    let block = &text[start..];
    let json_start = block.find("```json\n").expect("example") + 8;
    let json_end = json_start + block[json_start..].find("```").expect("end of example");
    let policy = Policy::from_json(&block[json_start..json_end])
        .expect("the README's example must be valid");
    assert_eq!(policy.rules.len(), 4);
    assert_eq!(policy.identity_headers.len(), 4);
}

/// Every counter name in the README's Observability table, with
/// `<name>.<class>` rows expanded by the classes their row lists.
fn readme_counters(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## Observability\n")
        .expect("README has an Observability section");
    let mut names = Vec::new();
    for row in readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let classes: Vec<&str> = cells[2]
            .split_once("class:")
            .map(|(_, list)| {
                list.split(',')
                    .map(|c| c.trim().trim_matches('`').trim_end_matches(" |"))
                    .collect()
            })
            .unwrap_or_default();
        for name in cells[1].split(',').map(|n| n.trim().trim_matches('`')) {
            match name.strip_suffix(".<class>") {
                Some(prefix) => {
                    assert!(!classes.is_empty(), "{name}: the row names no classes");
                    names.extend(classes.iter().map(|c| format!("{prefix}.{c}")));
                }
                None => names.push(name.to_string()),
            }
        }
    }
    names
}

#[test]
fn readme_lists_every_counter_and_no_other() {
    let mut documented = readme_counters(&readme());
    let mut defined: Vec<String> = mcp_authz::counters::Counter::ALL
        .iter()
        .map(|c| c.name())
        .collect();
    documented.sort();
    defined.sort();
    assert_eq!(documented, defined);
}

/// Every ```` ```json ```` block of the README: (line, text).
fn json_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in readme.lines().enumerate() {
        match &mut open {
            None if line.trim_end() == "```json" => open = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.starts_with("```") => blocks.extend(open.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

/// JSON examples that are no configuration, by a text each holds.
const NOT_CONFIGURATION: &[(&str, &str)] = &[("a decision log line", r#"{"mcp_authz":"deny""#)];

/// Placeholders the README writes where an operator puts a value of their
/// own, and a value of that form the test puts in their place.
const PLACEHOLDERS: &[(&str, &str)] = &[
    // A DPoP nonce key: 32 random bytes, base64url.
    (
        "<43+ base64url characters>",
        "c2VjcmV0LW5vbmNlLWtleS1vZi10aGlydHktdHdvLWI",
    ),
    // An environment variable the operator sets (Envoy's
    // `vm_config.environment_variables`): here, one that is set.
    ("\"MCP_AUTHZ_CLIENT_SECRET\"", "\"PATH\""),
];

/// What a fragment is completed with: a configuration it can stand in.
fn base_configuration() -> serde_json::Value {
    serde_json::json!({
        "resource": "https://mcp.example.com/mcp",
        "providers": [{"issuer": "https://idp.example.com/realms/mcp",
                       "jwks": {"remote": {"cluster": "idp"}}}],
        "rules": [{"effect": "allow", "methods": ["ping"]}]
    })
}

/// An example as the configuration it belongs to. The README shows whole
/// configurations, and fragments of one: rules (`{...}, {...}`), a
/// provider (`{"issuer": ...}`), top-level members (`"key": ...,`).
fn as_configuration(text: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let mut config = base_configuration();
    if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) {
        if object.contains_key("resource") || object.contains_key("servers") {
            return Ok(Value::Object(object));
        }
        if object.contains_key("issuer") {
            config["providers"] = Value::Array(vec![Value::Object(object)]);
            return Ok(config);
        }
        if object.contains_key("effect") {
            config["rules"] = Value::Array(vec![Value::Object(object)]);
            return Ok(config);
        }
    }
    if let Ok(Value::Array(rules)) = serde_json::from_str::<Value>(&format!("[{text}]")) {
        if rules.iter().all(|r| r.get("effect").is_some()) {
            config["rules"] = Value::Array(rules);
            return Ok(config);
        }
    }
    if let Ok(Value::Object(members)) = serde_json::from_str::<Value>(&format!("{{{text}}}")) {
        for (key, value) in members {
            config[key] = value;
        }
        return Ok(config);
    }
    Err("neither a configuration nor a fragment of one: give it a marker".into())
}

#[test]
fn every_readme_json_example_is_a_configuration_the_filter_accepts() {
    let text = readme();
    let mut checked = 0;
    for (line, block) in json_blocks(&text) {
        if let Some((what, _)) = NOT_CONFIGURATION
            .iter()
            .find(|(_, marker)| block.contains(marker))
        {
            println!("README line {line}: skipped, {what}");
            continue;
        }
        let mut block = block;
        for (placeholder, value) in PLACEHOLDERS {
            block = block.replace(placeholder, value);
        }
        let config = as_configuration(&block).unwrap_or_else(|e| panic!("README line {line}: {e}"));
        // What `mcp-authz check` and the filter load it with.
        if let Err(e) = Gateway::from_value(&config) {
            panic!("README line {line}: the example is refused: {e}");
        }
        checked += 1;
    }
    // The reference, the conditions, several servers, the Keycloak
    // settings, DPoP, publishing the call.
    assert_eq!(checked, 6, "a JSON example went unchecked");
}

#[test]
fn the_readme_scope_implies_example_is_accepted_and_means_what_it_says() {
    let text = readme();
    let start = text
        .find("\n| `scope_implies` |")
        .expect("the reference has a scope_implies row");
    let row_text = text[start + 1..].lines().next().unwrap_or_default();
    let example = row_text
        .split('`')
        .find(|span| span.starts_with('{'))
        .expect("the row has an example");
    let mut config = base_configuration();
    config["scope_implies"] = serde_json::from_str(example).expect("the example is JSON");
    let policy = Policy::from_value(&config).expect("the example is accepted");
    // "`mcp:admin` also satisfies `mcp:read`"
    assert_eq!(
        policy.scope_implies.implied_by(&["mcp:admin".to_string()]),
        vec!["mcp:write".to_string(), "mcp:read".to_string()]
    );
}
