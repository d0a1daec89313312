//! Compiling the configuration JSON into a [`Policy`]: every key checked,
//! every error naming its field.

use super::authorization_server::{parse_introspection, parse_upstream_token};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::object::Obj;
use super::*;
use crate::condition::Condition;
use crate::dpop::{DpopPolicy, Mode as DpopMode, NonceKeys};
use crate::glob::Glob;
use crate::keys::jwks::{Algorithm, KeySet};
use crate::uri::HttpUri;
use std::collections::BTreeMap;

impl Policy {
    /// Parses and validates a configuration of one server (no `servers`
    /// list); [`Gateway::from_json`] reads every configuration.
    pub fn from_json(text: &str) -> Result<Policy, ConfigError> {
        Gateway::from_json(text).and_then(Gateway::into_single)
    }

    /// Validates an already-parsed configuration of one server.
    pub fn from_value(value: &serde_json::Value) -> Result<Policy, ConfigError> {
        Gateway::from_value(value).and_then(Gateway::into_single)
    }
}

/// What a server's configuration is compiled with besides its own keys:
/// the shared providers (their `audiences` already the server's), the
/// shared body limit, and the server's place in the list.
pub(super) struct Shared {
    pub providers: Vec<Provider>,
    pub max_body_bytes: usize,
    pub server_name: Option<String>,
    pub server_index: usize,
}

/// Compiles the keys of one server — the top level of a configuration
/// without `servers`, or one `servers[]` entry — into its [`Policy`].
pub(super) fn compile_server(
    obj: &Obj,
    resource: String,
    shared: Shared,
) -> Result<Policy, ConfigError> {
    let (metadata_url, metadata_paths) =
        metadata_locations(&resource).map_err(|m| obj.error("resource", m))?;
    let providers = shared.providers;
    let authorization_servers = parse_authorization_servers(obj, &providers)?;
    let mut scopes_supported = obj
        .optional_str_list("scopes_supported")?
        .unwrap_or_default();
    for (i, s) in scopes_supported.iter().enumerate() {
        check_scope_token(s).map_err(|m| obj.error(&format!("scopes_supported[{i}]"), m))?;
    }
    // Never advertised (MCP 2026-07-28: clients ask for it themselves).
    scopes_supported.retain(|s| s != OFFLINE_ACCESS);
    let resource_documentation = match obj.optional_str("resource_documentation")? {
        Some(url) => {
            check_absolute_url(url).map_err(|m| obj.error("resource_documentation", m))?;
            Some(url.to_string())
        }
        None => None,
    };
    let token_forwarding = obj.choice(
        "token_forwarding",
        &[
            ("strip", TokenForwarding::Strip),
            ("forward", TokenForwarding::Forward),
        ],
    )?;
    let identity_headers = parse_identity_headers(obj)?;
    let upstream_token =
        parse_upstream_token(obj, &providers, token_forwarding, &identity_headers)?;
    let rules = obj
        .required_list("rules")?
        .iter()
        .enumerate()
        .map(|(i, v)| parse_rule(v, &obj.field(&format!("rules[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Policy {
        resource,
        metadata_url,
        metadata_paths,
        authorization_servers,
        scopes_supported,
        resource_name: obj.optional_str("resource_name")?.map(str::to_string),
        resource_documentation,
        providers,
        rules,
        filter_lists: obj.optional_bool("filter_lists")?.unwrap_or(true),
        token_forwarding,
        identity_headers,
        max_body_bytes: shared.max_body_bytes,
        mode: obj.choice(
            "mode",
            &[("enforce", Mode::Enforce), ("audit", Mode::Audit)],
        )?,
        public_paths: parse_public_paths(obj)?,
        upstream_token,
        scope_implies: parse_scope_implies(obj)?,
        server_name: shared.server_name,
        server_index: shared.server_index,
    })
}

/// `providers[]`, each issuer at most once. `resource` is the one server's
/// (the default audience); `None` when servers are listed, whose audiences
/// are their own.
pub(super) fn parse_providers(
    top: &Obj,
    resource: Option<&str>,
) -> Result<Vec<Provider>, ConfigError> {
    let providers = top
        .required_list("providers")?
        .iter()
        .enumerate()
        .map(|(i, v)| parse_provider(v, &format!("providers[{i}]"), resource))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, p) in providers.iter().enumerate() {
        if providers[..i].iter().any(|q| q.issuer == p.issuer) {
            return Err(top.error(
                &format!("providers[{i}].issuer"),
                "the same issuer is configured twice; a token's issuer must pick one provider"
                    .into(),
            ));
        }
    }
    // An opaque token names no issuer: it can only go to one introspection
    // endpoint, or an authorization server would see another's tokens.
    let introspecting: Vec<usize> = (0..providers.len())
        .filter(|&i| providers[i].introspection.is_some())
        .collect();
    if let [_, second, ..] = introspecting[..] {
        return Err(top.error(
            &format!("providers[{second}].introspection"),
            "only one provider may introspect: an opaque token names no issuer, and must not be sent to another authorization server"
                .into(),
        ));
    }
    Ok(providers)
}

/// `authorization_servers`, by default the providers' issuers.
fn parse_authorization_servers(
    top: &Obj,
    providers: &[Provider],
) -> Result<Vec<String>, ConfigError> {
    match top.optional_str_list("authorization_servers")? {
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                check_absolute_url(s)
                    .map_err(|m| top.error(&format!("authorization_servers[{i}]"), m))?;
            }
            Ok(list)
        }
        None => {
            let mut list: Vec<String> = Vec::new();
            for p in providers {
                if !list.contains(&p.issuer) {
                    list.push(p.issuer.clone());
                }
            }
            Ok(list)
        }
    }
}

/// `scope_implies`: each broad scope and the narrower ones it stands for,
/// closed transitively; a scope that implies itself (a cycle) is refused.
fn parse_scope_implies(top: &Obj) -> Result<ScopeImplies, ConfigError> {
    let Some(obj) = top.optional_obj("scope_implies")? else {
        return Ok(ScopeImplies::default());
    };
    let mut direct: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for scope in obj.map.keys() {
        check_scope_token(scope).map_err(|m| obj.error(scope, m))?;
        let implied = obj.required_str_list(scope)?;
        for (i, s) in implied.iter().enumerate() {
            check_scope_token(s).map_err(|m| obj.error(&format!("{scope}[{i}]"), m))?;
        }
        direct.insert(scope.clone(), implied);
    }
    let mut closure = BTreeMap::new();
    for scope in direct.keys() {
        let mut reached: Vec<String> = Vec::new();
        let mut todo: Vec<&String> = direct
            .get(scope)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        while let Some(next) = todo.pop() {
            if next == scope {
                return Err(obj.error(
                    scope,
                    format!("{scope:?} implies itself (a cycle): a scope hierarchy must not loop"),
                ));
            }
            if !reached.contains(next) {
                reached.push(next.clone());
                todo.extend(direct.get(next).into_iter().flatten());
            }
        }
        closure.insert(scope.clone(), reached);
    }
    Ok(ScopeImplies { closure })
}

pub(super) fn parse_max_body_bytes(top: &Obj) -> Result<usize, ConfigError> {
    match top.optional_u64("max_body_bytes")? {
        None => Ok(defaults::MAX_BODY_BYTES as usize),
        Some(0) => Err(top.error("max_body_bytes", "must be at least 1".into())),
        Some(n) if n > defaults::MAX_BODY_BYTES_LIMIT => Err(top.error(
            "max_body_bytes",
            format!("must be at most {}", defaults::MAX_BODY_BYTES_LIMIT),
        )),
        Some(n) => Ok(n as usize),
    }
}

fn parse_public_paths(top: &Obj) -> Result<Vec<String>, ConfigError> {
    let public_paths = top.optional_str_list("public_paths")?.unwrap_or_default();
    for (i, p) in public_paths.iter().enumerate() {
        if !p.starts_with('/') || p.contains(['?', '#']) || p.chars().any(char::is_whitespace) {
            return Err(top.error(
                &format!("public_paths[{i}]"),
                "must be an exact path starting with '/', without query or fragment".into(),
            ));
        }
    }
    Ok(public_paths)
}

/// RFC 9728 section 3.1: the metadata URL inserts the well-known segment
/// between the resource's authority and its path. Returns that URL and the
/// request paths that serve the document (path-inserted first, then root).
pub(super) fn metadata_locations(resource: &str) -> Result<(String, Vec<String>), String> {
    const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
    let uri = HttpUri::parse(resource)?;
    let path = uri.path.trim_end_matches('/');
    let inserted = format!("{WELL_KNOWN}{path}");
    let url = format!("{}{inserted}{}", uri.origin(), uri.query);
    let mut paths = vec![inserted];
    if !path.is_empty() {
        paths.push(WELL_KNOWN.to_string());
    }
    Ok((url, paths))
}

/// An absolute `http`/`https` URI with an authority and no fragment.
pub(super) fn check_absolute_url(url: &str) -> Result<(), String> {
    HttpUri::parse(url).map(|_| ())
}

/// RFC 6749 scope-token: printable ASCII without space, `"` or `\`.
fn check_scope_token(scope: &str) -> Result<(), String> {
    if !super::is_scope_token(scope) {
        return Err(format!("{scope:?} is not a valid OAuth scope token"));
    }
    Ok(())
}

fn parse_provider(
    value: &serde_json::Value,
    path: &str,
    resource: Option<&str>,
) -> Result<Provider, ConfigError> {
    let obj = Obj::new(value, path)?;
    obj.only(PROVIDER_KEYS)?;
    let issuer = obj.required_str("issuer")?.to_string();
    if issuer.is_empty() {
        return Err(obj.error("issuer", "must not be empty".into()));
    }
    let audiences = match (resource, obj.optional_str_list("audiences")?) {
        (Some(_), Some(audiences)) => audiences,
        (Some(resource), None) => vec![resource.to_string()],
        (None, None) => Vec::new(),
        // One provider serves every server: an audience here would let a
        // token for one server in at another.
        (None, Some(_)) => {
            return Err(obj.error(
                "audiences",
                "is set per server when servers are listed (servers[].audiences)".into(),
            ))
        }
    };
    let introspection = parse_introspection(&obj)?;
    let (jwks, skipped_keys) = if introspection.is_some() && obj.get("jwks").is_none() {
        (None, Vec::new())
    } else {
        let (jwks, skipped) = parse_jwks(&obj)?;
        (Some(jwks), skipped)
    };
    let algorithms = parse_algorithms(&obj, "algorithms")?;
    let clock_skew_seconds = obj
        .optional_u64("clock_skew_seconds")?
        .unwrap_or(defaults::CLOCK_SKEW_SECONDS);
    if clock_skew_seconds > defaults::MAX_CLOCK_SKEW_SECONDS {
        return Err(obj.error(
            "clock_skew_seconds",
            format!("must be at most {}", defaults::MAX_CLOCK_SKEW_SECONDS),
        ));
    }
    let roles_claims = obj
        .optional_str_list("roles_claims")?
        .unwrap_or_else(|| vec![defaults::ROLES_CLAIM.to_string()])
        .iter()
        .enumerate()
        .map(|(i, p)| claim_path(p).map_err(|m| obj.error(&format!("roles_claims[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let scopes_claim = obj
        .optional_str("scopes_claim")?
        .unwrap_or(defaults::SCOPES_CLAIM)
        .to_string();
    if scopes_claim.is_empty() {
        return Err(obj.error("scopes_claim", "must not be empty".into()));
    }
    let token_types = parse_token_types(&obj)?;
    let require_token_type = obj.optional_bool("require_token_type")?.unwrap_or(false);
    let dpop = parse_dpop(&obj)?;
    Ok(Provider {
        issuer,
        audiences,
        jwks,
        introspection,
        algorithms,
        clock_skew_seconds,
        roles_claims,
        scopes_claim,
        token_types,
        require_token_type,
        dpop,
        skipped_keys,
    })
}

/// `dpop`, `dpop_algorithms`, `dpop_iat_window_seconds`, `dpop_nonce`.
fn parse_dpop(obj: &Obj) -> Result<DpopPolicy, ConfigError> {
    let mode = obj.choice(
        "dpop",
        &[
            ("off", DpopMode::Off),
            ("allowed", DpopMode::Allowed),
            ("required", DpopMode::Required),
        ],
    )?;
    let algorithms = match obj.optional_str_list("dpop_algorithms")? {
        None => Algorithm::ALL.to_vec(),
        Some(_) => parse_algorithms(obj, "dpop_algorithms")?,
    };
    let iat_window_seconds = obj
        .optional_u64("dpop_iat_window_seconds")?
        .unwrap_or(defaults::DPOP_IAT_WINDOW_SECONDS);
    if !(1..=defaults::MAX_DPOP_IAT_WINDOW_SECONDS).contains(&iat_window_seconds) {
        return Err(obj.error(
            "dpop_iat_window_seconds",
            format!(
                "must be between 1 and {}",
                defaults::MAX_DPOP_IAT_WINDOW_SECONDS
            ),
        ));
    }
    let nonce = match obj.optional_obj("dpop_nonce")? {
        None => None,
        Some(nonce) => {
            nonce.only(DPOP_NONCE_KEYS)?;
            let keys = nonce
                .required_str_list("keys")?
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    URL_SAFE_NO_PAD
                        .decode(k.trim_end_matches('='))
                        .map_err(|_| nonce.error(&format!("keys[{i}]"), "is not base64url".into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let lifetime = nonce
                .optional_u64("lifetime_seconds")?
                .unwrap_or(defaults::DPOP_NONCE_LIFETIME_SECONDS);
            let bounds = defaults::MIN_DPOP_NONCE_LIFETIME_SECONDS
                ..=defaults::MAX_DPOP_NONCE_LIFETIME_SECONDS;
            if !bounds.contains(&lifetime) {
                return Err(nonce.error(
                    "lifetime_seconds",
                    format!("must be between {} and {}", bounds.start(), bounds.end()),
                ));
            }
            Some(NonceKeys::new(keys, lifetime).map_err(|m| nonce.error("keys", m))?)
        }
    };
    if mode == DpopMode::Off && nonce.is_some() {
        return Err(obj.error(
            "dpop_nonce",
            "is only used with \"dpop\": \"allowed\" or \"required\"".into(),
        ));
    }
    Ok(DpopPolicy {
        mode,
        algorithms,
        iat_window_seconds,
        nonce,
    })
}

fn parse_algorithms(obj: &Obj, key: &str) -> Result<Vec<Algorithm>, ConfigError> {
    Ok(match obj.optional_str_list(key)? {
        None => Algorithm::ALL.to_vec(),
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| Algorithm::parse(n).map_err(|m| obj.error(&format!("{key}[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?,
    })
}

fn parse_token_types(obj: &Obj) -> Result<Vec<String>, ConfigError> {
    Ok(match obj.optional_str_list("token_types")? {
        None => defaults::TOKEN_TYPES
            .iter()
            .map(|t| t.to_string())
            .collect(),
        Some(types) if types.is_empty() => {
            return Err(obj.error("token_types", "must not be empty".into()))
        }
        Some(types) => types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let folded = crate::token::fold_token_type(t);
                if folded.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    Err(obj.error(
                        &format!("token_types[{i}]"),
                        "must be a media type such as \"at+jwt\"".into(),
                    ))
                } else {
                    Ok(folded)
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    })
}

/// The key source, and why each unusable inline key was skipped.
fn parse_jwks(provider: &Obj) -> Result<(JwksSource, Vec<String>), ConfigError> {
    let obj = provider.required_obj("jwks")?;
    obj.only(&["inline", "remote"])?;
    match (obj.map.get("inline"), obj.map.get("remote")) {
        (Some(_), Some(_)) | (None, None) => {
            Err(obj.error("", "needs exactly one of \"inline\" or \"remote\"".into()))
        }
        (Some(inline), None) => {
            let parsed = match inline {
                serde_json::Value::String(text) => KeySet::parse(text),
                other => KeySet::from_value(other),
            };
            let (keys, skipped) = parsed.map_err(|e| obj.error("inline", e.to_string()))?;
            if keys.is_empty() {
                return Err(obj.error(
                    "inline",
                    "holds no key usable for signature verification".into(),
                ));
            }
            Ok((JwksSource::Inline(keys), skipped))
        }
        (None, Some(_)) => {
            let remote = obj.required_obj("remote")?;
            remote.only(REMOTE_JWKS_KEYS)?;
            let cluster = remote.required_str("cluster")?.to_string();
            if cluster.is_empty() {
                return Err(remote.error("cluster", "must name an Envoy cluster".into()));
            }
            let url = match remote.optional_str("url")? {
                Some(u) => {
                    check_absolute_url(u).map_err(|m| remote.error("url", m))?;
                    Some(u.to_string())
                }
                None => None,
            };
            let refresh_seconds = remote
                .optional_u64("refresh_seconds")?
                .unwrap_or(defaults::REFRESH_SECONDS);
            if !(defaults::MIN_REFRESH_SECONDS..=defaults::MAX_REFRESH_SECONDS)
                .contains(&refresh_seconds)
            {
                return Err(remote.error(
                    "refresh_seconds",
                    format!(
                        "must be between {} and {}",
                        defaults::MIN_REFRESH_SECONDS,
                        defaults::MAX_REFRESH_SECONDS
                    ),
                ));
            }
            let timeout_ms = remote
                .optional_u64("timeout_ms")?
                .unwrap_or(defaults::TIMEOUT_MS);
            if timeout_ms == 0 || timeout_ms > defaults::MAX_TIMEOUT_MS {
                return Err(remote.error(
                    "timeout_ms",
                    format!("must be between 1 and {}", defaults::MAX_TIMEOUT_MS),
                ));
            }
            let remote = RemoteJwks {
                cluster,
                url,
                refresh_seconds,
                timeout_ms,
            };
            Ok((JwksSource::Remote(remote), Vec::new()))
        }
    }
}

fn parse_rule(value: &serde_json::Value, path: &str) -> Result<Rule, ConfigError> {
    let obj = Obj::new(value, path)?;
    obj.only(RULE_KEYS)?;
    let name = obj.optional_str("name")?.unwrap_or(path).to_string();
    let effect = match obj.required_str("effect")? {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => {
            return Err(obj.error(
                "effect",
                format!("{other:?} is not one of \"allow\", \"deny\""),
            ))
        }
    };
    let globs = |key: &str, list: Vec<String>| -> Result<Vec<Glob>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, g)| Glob::parse(g).map_err(|m| obj.error(&format!("{key}[{i}]"), m)))
            .collect()
    };
    let methods = globs("methods", obj.required_str_list("methods")?)?;
    let names = match obj.optional_str_list("names")? {
        Some(list) => Some(globs("names", list)?),
        None => None,
    };
    let roles = obj.optional_str_list("roles")?;
    let scopes = obj.optional_str_list("scopes")?;
    if let Some(scopes) = &scopes {
        for (i, s) in scopes.iter().enumerate() {
            check_scope_token(s).map_err(|m| obj.error(&format!("scopes[{i}]"), m))?;
        }
    }
    let when = match obj.optional_str("when")? {
        Some(source) => Some(Condition::compile(source).map_err(|m| obj.error("when", m))?),
        None => None,
    };
    Ok(Rule {
        name,
        effect,
        methods,
        names,
        roles,
        scopes,
        when,
    })
}

pub(super) fn parse_identity_headers(top: &Obj) -> Result<Vec<IdentityHeader>, ConfigError> {
    let Some(obj) = top.optional_obj("identity_headers")? else {
        return Ok(Vec::new());
    };
    let mut headers = Vec::new();
    for (name, source) in obj.map {
        let field = name.as_str();
        let lower = name.to_ascii_lowercase();
        if lower.is_empty() || !lower.bytes().all(is_header_name_byte) {
            return Err(obj.error(field, "is not a valid HTTP header name".into()));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with(':') {
            return Err(obj.error(field, "is reserved and cannot carry identity".into()));
        }
        if headers.iter().any(|h: &IdentityHeader| h.name == lower) {
            return Err(obj.error(
                field,
                "is configured twice (header names are case-insensitive)".into(),
            ));
        }
        let source = match source.as_str() {
            Some("$roles") => ClaimSource::Roles,
            Some("$scopes") => ClaimSource::Scopes,
            Some("$issuer") => ClaimSource::Issuer,
            Some(s) if s.starts_with('$') => {
                return Err(obj.error(
                    field,
                    format!("{s:?} is not one of $roles, $scopes, $issuer"),
                ))
            }
            Some(path) => ClaimSource::Claim(claim_path(path).map_err(|m| obj.error(field, m))?),
            None => {
                return Err(obj.error(
                    field,
                    "must be a string: a claim path, $roles, $scopes or $issuer".into(),
                ))
            }
        };
        headers.push(IdentityHeader {
            name: lower,
            source,
        });
    }
    Ok(headers)
}

pub(super) fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `realm_access.roles` → `["realm_access", "roles"]`.
fn claim_path(path: &str) -> Result<Vec<String>, String> {
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    if segments.iter().any(String::is_empty) {
        return Err(format!(
            "{path:?} is not a claim path (dot-separated, no empty segment)"
        ));
    }
    Ok(segments)
}
