//! `mcp-authz`: the filter's core on the command line. `check` validates a
//! configuration exactly as the filter does, `explain` runs one request
//! through the filter's pipeline and says what it would do, `metadata`
//! prints the RFC 9728 document. Exit status: 0 ok / allowed, 1 refused /
//! invalid, 2 usage error.

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use mcp_authz::answer;
use mcp_authz::config::{Client, Endpoint, Gateway, JwksSource, Policy, Provider};
use mcp_authz::dpop::Mode as DpopMode;
use mcp_authz::explain::{self, Outcome, Request};
use mcp_authz::gate::RequestHead;
use mcp_authz::keys::jwks::KeySet;
use mcp_authz::uri::HttpUri;

const USAGE: &str = "\
usage:
  mcp-authz check CONFIG
  mcp-authz explain --config CONFIG [--token TOKEN] [--body BODY] [--header NAME:VALUE]...
                    [--jwks JWKS] [--now UNIX_SECONDS] [--method POST] [--path PATH] [--host HOST]
  mcp-authz metadata CONFIG [SERVER]

CONFIG, TOKEN, BODY and JWKS are read from the file they name, if it exists,
else taken literally. explain: the token goes in `Authorization: Bearer`, a
POST gets `Content-Type: application/json` unless --header sets one, --jwks
holds the keys of providers whose keys are remote, the clock defaults to now
and the path to the configured resource's (the first server's, when servers
are listed; --host sets the request's authority). metadata: SERVER names one
of the servers listed (default: the first).

exit status: 0 ok / allowed, 1 invalid / refused, 2 usage or configuration error";

/// A failure that ends the command with a message and a status.
struct Failure {
    message: String,
    status: u8,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        message: format!("{}\n\n{USAGE}", message.into()),
        status: 2,
    }
}

fn fatal(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        status: 2,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check") => check(&args[1..]),
        Some("explain") => explain_command(&args[1..]),
        Some("metadata") => metadata(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(0)
        }
        Some(other) => Err(usage(format!("unknown command {other:?}"))),
        None => Err(usage("a command is needed")),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(failure) => {
            eprintln!("mcp-authz: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

/// The file an argument names, else the argument itself.
fn file_or_literal(arg: &str) -> Result<Vec<u8>, Failure> {
    let path = Path::new(arg);
    if path.is_file() {
        std::fs::read(path).map_err(|e| fatal(format!("cannot read {arg}: {e}")))
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// A JSON document (configuration, JWKS): a file, or literal JSON text. A
/// missing file is named as such rather than parsed as JSON.
fn json_argument(arg: &str, what: &str) -> Result<String, Failure> {
    if !Path::new(arg).is_file() && !arg.trim_start().starts_with('{') {
        return Err(fatal(format!("{what} {arg:?}: no such file")));
    }
    String::from_utf8(file_or_literal(arg)?)
        .map_err(|_| fatal(format!("{what} {arg:?} is not UTF-8 text")))
}

fn one_config_argument(args: &[String]) -> Result<&str, Failure> {
    match args {
        [config] if !config.starts_with("--") => Ok(config),
        _ => Err(usage("expected exactly one CONFIG argument")),
    }
}

fn load_gateway(arg: &str) -> Result<Gateway, Failure> {
    let text = json_argument(arg, "configuration")?;
    Gateway::from_json(&text).map_err(|e| fatal(format!("{arg}: {e}")))
}

fn check(args: &[String]) -> Result<u8, Failure> {
    let arg = one_config_argument(args)?;
    let text = json_argument(arg, "configuration")?;
    match Gateway::from_json(&text) {
        Ok(gateway) => {
            for server in &gateway.servers {
                describe(&server.policy, gateway.listed.then_some(&server.matcher));
                print_upstream_token(&server.policy);
            }
            print_providers(gateway.providers());
            Ok(0)
        }
        Err(e) => {
            eprintln!("{arg}: {e}");
            Ok(1)
        }
    }
}

/// What `check` says of one server's policy.
fn describe(policy: &Policy, matcher: Option<&mcp_authz::config::ServerMatch>) {
    let prefix = match (&policy.server_name, matcher) {
        (Some(name), Some(m)) => {
            let hosts: Vec<String> = m
                .hosts
                .iter()
                .map(|h| {
                    if h.wildcard {
                        format!("*{}", h.host)
                    } else {
                        h.host.clone()
                    }
                })
                .collect();
            let hosts = if hosts.is_empty() {
                "any host".to_string()
            } else {
                hosts.join(" ")
            };
            format!("server {name} ({hosts}, {}): ", m.path_prefix)
        }
        _ => String::new(),
    };
    println!(
        "ok: {prefix}{}, {} provider(s), {} rule(s)",
        policy.resource,
        policy.providers.len(),
        policy.rules.len()
    );
    // Conditions as compiled, and whether lists can decide them.
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(when) = &rule.when {
            let lists = if when.uses_arguments() {
                "reads the arguments: lists keep the item, calls decide"
            } else {
                "decided in lists and calls alike"
            };
            println!(
                "rules[{i}] {:?} when {} ({lists})",
                rule.name,
                when.source()
            );
        }
    }
    for (scope, implied) in &policy.scope_implies.closure {
        println!("scope {scope} implies {}", implied.join(" "));
    }
}

/// How `check` names an authorization server call: the endpoint, cluster
/// and client authentication method, never a secret.
fn call_text(endpoint: &Endpoint, client: &Client) -> String {
    format!(
        "at {} through cluster {:?} as client {:?} ({})",
        endpoint
            .url
            .as_deref()
            .unwrap_or("the issuer's discovered endpoint"),
        endpoint.cluster,
        client.id,
        client.auth.name()
    )
}

/// Which providers introspect or take DPoP (shared by every server).
fn print_providers(providers: &[Provider]) {
    let call = call_text;
    for (i, provider) in providers.iter().enumerate() {
        if let Some(introspection) = &provider.introspection {
            let tokens = if provider.jwks.is_some() {
                "opaque tokens"
            } else {
                "every token"
            };
            println!(
                "providers[{i}] {:?} introspects {tokens} {}, answers kept up to {} s",
                provider.issuer,
                call(&introspection.endpoint, &introspection.client),
                introspection.cache_seconds
            );
        }
        if provider.dpop.mode != DpopMode::Off {
            println!(
                "providers[{i}] {:?} dpop {}: a token bound to a key (cnf.jkt, in a JWT or an introspection answer) needs its proof",
                provider.issuer,
                provider.dpop.mode.name()
            );
        }
    }
}

/// A server's token exchange for its upstream.
fn print_upstream_token(policy: &Policy) {
    let call = call_text;
    if let Some(upstream) = &policy.upstream_token {
        let wanted = match (&upstream.audience, &upstream.resource) {
            (Some(audience), _) => format!("audience {audience:?}"),
            (None, Some(resource)) => format!("resource {resource:?}"),
            (None, None) => "no audience".to_string(),
        };
        println!(
            "upstream_token: the tokens of providers[{}] exchanged for {wanted} {}, sent in {}{}",
            upstream.provider,
            call(&upstream.endpoint, &upstream.client),
            upstream.header,
            if upstream.cache {
                ", reused until shortly before they expire"
            } else {
                ""
            }
        );
    }
}

fn metadata(args: &[String]) -> Result<u8, Failure> {
    let (config, server) = match args {
        [config] if !config.starts_with("--") => (config, None),
        [config, server] if !config.starts_with("--") => (config, Some(server.as_str())),
        _ => return Err(usage("expected CONFIG and at most one SERVER")),
    };
    let gateway = load_gateway(config)?;
    let chosen = match server {
        None => gateway.servers.first(),
        Some(name) => gateway
            .servers
            .iter()
            .find(|s| s.policy.server_name.as_deref() == Some(name)),
    };
    let policy = &chosen
        .ok_or_else(|| fatal(format!("{config}: no server named {server:?}")))?
        .policy;
    let document = answer::metadata_document(policy);
    let value: serde_json::Value = serde_json::from_slice(&document.body)
        .map_err(|e| fatal(format!("metadata document: {e}")))?;
    let pretty = serde_json::to_string_pretty(&value)
        .map_err(|e| fatal(format!("metadata document: {e}")))?;
    println!("{pretty}");
    // Where it is served, on stderr so stdout stays the document alone.
    // With servers listed, the root path serves it only on a host with no
    // other server.
    let paths = if gateway.listed {
        &policy.metadata_paths[..1]
    } else {
        &policy.metadata_paths[..]
    };
    eprintln!(
        "served at {} (request paths: {})",
        policy.metadata_url,
        paths.join(", ")
    );
    Ok(0)
}

/// The options of `explain`.
#[derive(Default)]
struct ExplainArgs {
    config: Option<String>,
    token: Option<String>,
    body: Option<String>,
    headers: Vec<(String, String)>,
    jwks: Option<String>,
    now: Option<u64>,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
}

fn parse_explain_args(args: &[String]) -> Result<ExplainArgs, Failure> {
    let mut parsed = ExplainArgs::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--config" => parsed.config = Some(value()?),
            "--token" => parsed.token = Some(value()?),
            "--body" => parsed.body = Some(value()?),
            "--jwks" => parsed.jwks = Some(value()?),
            "--method" => parsed.method = Some(value()?.to_ascii_uppercase()),
            "--path" => parsed.path = Some(value()?),
            "--host" => parsed.host = Some(value()?),
            "--now" => {
                let text = value()?;
                parsed.now = Some(text.parse().map_err(|_| {
                    usage(format!("--now {text:?} is not a number of Unix seconds"))
                })?);
            }
            "--header" => {
                let text = value()?;
                let (name, value) = text
                    .split_once(':')
                    .ok_or_else(|| usage(format!("--header {text:?} is not NAME:VALUE")))?;
                let name = name.trim().to_ascii_lowercase();
                if name.is_empty() {
                    return Err(usage(format!("--header {text:?} has no name")));
                }
                parsed.headers.push((name, value.trim().to_string()));
            }
            other => return Err(usage(format!("unknown option {other:?}"))),
        }
    }
    Ok(parsed)
}

/// The path of the configured resource (`/mcp` for `https://h/mcp`).
fn resource_path(resource: &str) -> String {
    match HttpUri::parse(resource) {
        Ok(uri) if !uri.path.is_empty() => uri.path.to_string(),
        _ => "/".to_string(),
    }
}

fn explain_command(args: &[String]) -> Result<u8, Failure> {
    let args = parse_explain_args(args)?;
    let config = args
        .config
        .as_deref()
        .ok_or_else(|| usage("--config is required"))?;
    let gateway = load_gateway(config)?;

    let remote = match &args.jwks {
        Some(arg) => {
            let text = json_argument(arg, "JWKS")?;
            let (keys, warnings) =
                KeySet::parse(&text).map_err(|e| fatal(format!("--jwks {arg}: {e}")))?;
            for warning in warnings {
                eprintln!("mcp-authz: --jwks: {warning}");
            }
            if !gateway
                .providers()
                .iter()
                .any(|p| matches!(p.jwks, Some(JwksSource::Remote(_))))
            {
                eprintln!("mcp-authz: --jwks ignored: every provider's keys are inline");
            }
            Some(keys)
        }
        None => None,
    };
    let keys = explain::key_sets(&gateway, remote.as_ref());

    let method = args.method.unwrap_or_else(|| "POST".to_string());
    let first = gateway
        .servers
        .first()
        .map(|s| s.policy.resource.as_str())
        .unwrap_or_default();
    let path = args.path.unwrap_or_else(|| resource_path(first));
    let mut headers = args.headers;
    if let Some(host) = args.host {
        headers.push((":authority".into(), host));
    }
    if let Some(arg) = &args.token {
        let text = String::from_utf8(file_or_literal(arg)?)
            .map_err(|_| fatal("the token is not UTF-8 text"))?;
        let token = text.trim();
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .unwrap_or(token);
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    if method == "POST" && !headers.iter().any(|(n, _)| n == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let body = match &args.body {
        Some(arg) => file_or_literal(arg)?,
        None if method == "POST" => return Err(usage("a POST needs --body")),
        None => Vec::new(),
    };
    let now = match args.now {
        Some(now) => now,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| fatal("the system clock is before 1970"))?
            .as_secs(),
    };

    let mut head = RequestHead::new(&method, &path, headers);
    head.has_body = !body.is_empty();
    let request = Request { head, body };
    let (outcome, text) =
        explain::explain(&gateway, &keys, &request, now).map_err(|e| fatal(e.to_string()))?;
    print!("{text}");
    Ok(match outcome {
        Outcome::Forwarded | Outcome::Answered => 0,
        Outcome::Refused => 1,
    })
}
