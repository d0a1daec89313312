//! Plugin configuration: the JSON of CONTRACT section 3 parsed strictly and
//! compiled into a [`Policy`] that the request path uses as is.

use crate::glob::Glob;
use crate::jwks::{Algorithm, KeySet};

/// Everything the filter needs to decide, validated and compiled once.
#[derive(Debug, Clone)]
pub struct Policy {
    pub resource: String,
    /// RFC 9728 metadata URL, the path-inserted form for `resource`.
    pub metadata_url: String,
    /// Request paths that serve the metadata document (path-inserted and root).
    pub metadata_paths: Vec<String>,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub filter_lists: bool,
    pub token_forwarding: TokenForwarding,
    pub identity_headers: Vec<IdentityHeader>,
    pub max_body_bytes: usize,
    pub mode: Mode,
    pub public_paths: Vec<String>,
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct Provider {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Accepted algorithms; never `none` nor HMAC.
    pub algorithms: Vec<Algorithm>,
    pub clock_skew_seconds: u64,
    /// Each entry is a dot-path split into segments, e.g. `["realm_access", "roles"]`.
    pub roles_claims: Vec<Vec<String>>,
    pub scopes_claim: String,
    /// Accepted JWT `typ` values, lower-case, without an `application/`
    /// prefix (RFC 7515 4.1.9 makes it optional).
    pub token_types: Vec<String>,
    /// Whether a token without `typ` is refused.
    pub require_token_type: bool,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Inline(KeySet),
    Remote(RemoteJwks),
}

/// A JWKS fetched through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub cluster: String,
    /// `None`: discover it from the issuer (RFC 8414, then OpenID discovery).
    pub url: Option<String>,
    pub refresh_seconds: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One authorization rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub methods: Vec<Glob>,
    /// `None`: the rule matches whatever the name.
    pub names: Option<Vec<Glob>>,
    /// `None`: no role needed. Otherwise any one of them.
    pub roles: Option<Vec<String>>,
    /// `None`: no scope needed. Otherwise all of them.
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenForwarding {
    Strip,
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

/// A header the filter sets upstream from the verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    /// Lower-case header name.
    pub name: String,
    pub source: ClaimSource,
}

/// What an identity header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSource {
    /// A dot-path into the token's claims.
    Claim(Vec<String>),
    Roles,
    Scopes,
    Issuer,
}

/// A refused configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending field, e.g. `providers[0].jwks.remote.cluster`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "configuration: {}", self.message)
        } else {
            write!(f, "configuration field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Defaults named once, shared by the parser and the README check.
pub mod defaults {
    pub const CLOCK_SKEW_SECONDS: u64 = 60;
    pub const REFRESH_SECONDS: u64 = 300;
    pub const TIMEOUT_MS: u64 = 2000;
    pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
    pub const ROLES_CLAIM: &str = "roles";
    pub const SCOPES_CLAIM: &str = "scope";
    /// RFC 9068 access tokens, and issuers that type every JWT as `JWT`.
    pub const TOKEN_TYPES: &[&str] = &["at+jwt", "jwt"];
    /// Upper bounds that catch typos (a skew of hours, a 1 GiB body) before they
    /// become a security or memory problem.
    pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;
    pub const MAX_BODY_BYTES_LIMIT: u64 = 64 * 1024 * 1024;
    pub const MAX_TIMEOUT_MS: u64 = 60_000;
    pub const MIN_REFRESH_SECONDS: u64 = 10;
    pub const MAX_REFRESH_SECONDS: u64 = 7 * 24 * 3600;
}

/// The top-level keys, in the order the README's reference lists them.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "resource",
    "authorization_servers",
    "scopes_supported",
    "resource_name",
    "resource_documentation",
    "providers",
    "rules",
    "filter_lists",
    "token_forwarding",
    "identity_headers",
    "max_body_bytes",
    "mode",
    "public_paths",
];

/// Keys of one `providers[]` entry.
pub const PROVIDER_KEYS: &[&str] = &[
    "issuer",
    "audiences",
    "jwks",
    "algorithms",
    "clock_skew_seconds",
    "roles_claims",
    "scopes_claim",
    "token_types",
    "require_token_type",
];

/// Keys of `providers[].jwks.remote`.
pub const REMOTE_JWKS_KEYS: &[&str] = &["cluster", "url", "refresh_seconds", "timeout_ms"];

/// Keys of one `rules[]` entry.
pub const RULE_KEYS: &[&str] = &["name", "effect", "methods", "names", "roles", "scopes"];

/// Headers an operator may not have the filter set from claims: they carry
/// the request's framing, routing or credentials.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "mcp-method",
    "mcp-name",
    "mcp-session-id",
    "mcp-protocol-version",
];

impl Policy {
    /// Parses and validates the plugin configuration.
    pub fn from_json(text: &str) -> Result<Policy, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError {
            field: String::new(),
            message: format!("not valid JSON: {e}"),
        })?;
        Policy::from_value(&value)
    }

    /// Validates an already-parsed configuration value.
    pub fn from_value(value: &serde_json::Value) -> Result<Policy, ConfigError> {
        let top = Obj::new(value, "")?;
        top.only(TOP_LEVEL_KEYS)?;

        let resource = top.required_str("resource")?.to_string();
        let (metadata_url, metadata_paths) =
            metadata_locations(&resource).map_err(|m| top.error("resource", m))?;

        let providers = top
            .required_list("providers")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_provider(v, &format!("providers[{i}]"), &resource))
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

        let authorization_servers = match top.optional_str_list("authorization_servers")? {
            Some(list) => {
                for (i, s) in list.iter().enumerate() {
                    check_absolute_url(s)
                        .map_err(|m| top.error(&format!("authorization_servers[{i}]"), m))?;
                }
                list
            }
            None => {
                let mut list: Vec<String> = Vec::new();
                for p in &providers {
                    if !list.contains(&p.issuer) {
                        list.push(p.issuer.clone());
                    }
                }
                list
            }
        };
        let scopes_supported = top
            .optional_str_list("scopes_supported")?
            .unwrap_or_default();
        for (i, s) in scopes_supported.iter().enumerate() {
            check_scope_token(s).map_err(|m| top.error(&format!("scopes_supported[{i}]"), m))?;
        }
        let resource_name = top.optional_str("resource_name")?.map(str::to_string);
        let resource_documentation = match top.optional_str("resource_documentation")? {
            Some(url) => {
                check_absolute_url(url).map_err(|m| top.error("resource_documentation", m))?;
                Some(url.to_string())
            }
            None => None,
        };

        let rules = top
            .required_list("rules")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_rule(v, &format!("rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        let filter_lists = top.optional_bool("filter_lists")?.unwrap_or(true);
        let token_forwarding = match top.optional_str("token_forwarding")? {
            None | Some("strip") => TokenForwarding::Strip,
            Some("forward") => TokenForwarding::Forward,
            Some(other) => {
                return Err(top.error(
                    "token_forwarding",
                    format!("{other:?} is not one of \"strip\", \"forward\""),
                ))
            }
        };
        let identity_headers = parse_identity_headers(&top)?;
        let max_body_bytes = match top.optional_u64("max_body_bytes")? {
            None => defaults::MAX_BODY_BYTES,
            Some(0) => return Err(top.error("max_body_bytes", "must be at least 1".into())),
            Some(n) if n > defaults::MAX_BODY_BYTES_LIMIT => {
                return Err(top.error(
                    "max_body_bytes",
                    format!("must be at most {}", defaults::MAX_BODY_BYTES_LIMIT),
                ))
            }
            Some(n) => n,
        };
        let mode = match top.optional_str("mode")? {
            None | Some("enforce") => Mode::Enforce,
            Some("audit") => Mode::Audit,
            Some(other) => {
                return Err(top.error(
                    "mode",
                    format!("{other:?} is not one of \"enforce\", \"audit\""),
                ))
            }
        };
        let public_paths = top.optional_str_list("public_paths")?.unwrap_or_default();
        for (i, p) in public_paths.iter().enumerate() {
            if !p.starts_with('/') || p.contains(['?', '#']) || p.chars().any(char::is_whitespace) {
                return Err(top.error(
                    &format!("public_paths[{i}]"),
                    "must be an exact path starting with '/', without query or fragment".into(),
                ));
            }
        }

        Ok(Policy {
            resource,
            metadata_url,
            metadata_paths,
            authorization_servers,
            scopes_supported,
            resource_name,
            resource_documentation,
            providers,
            rules,
            filter_lists,
            token_forwarding,
            identity_headers,
            max_body_bytes: max_body_bytes as usize,
            mode,
            public_paths,
        })
    }
}

/// RFC 9728 section 3.1: the metadata URL inserts the well-known segment
/// between the resource's authority and its path. Returns that URL and the
/// request paths that serve the document (path-inserted first, then root).
fn metadata_locations(resource: &str) -> Result<(String, Vec<String>), String> {
    check_absolute_url(resource)?;
    const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
    let scheme_end = resource.find("://").map(|i| i + 3).unwrap_or(0);
    let (origin, rest) = match resource[scheme_end..].find(['/', '?']) {
        Some(i) => resource.split_at(scheme_end + i),
        None => (resource, ""),
    };
    let (path, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = path.trim_end_matches('/');
    let inserted = format!("{WELL_KNOWN}{path}");
    let url = format!("{origin}{inserted}{query}");
    let mut paths = vec![inserted];
    if !path.is_empty() {
        paths.push(WELL_KNOWN.to_string());
    }
    Ok((url, paths))
}

/// An absolute `http`/`https` URI with an authority and no fragment.
fn check_absolute_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an absolute http(s) URI"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if url.contains('#') {
        return Err(format!("{url:?} must not have a fragment"));
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!("{url:?} holds characters a URI cannot carry"));
    }
    Ok(())
}

/// RFC 6749 scope-token: printable ASCII without space, `"` or `\`.
fn check_scope_token(scope: &str) -> Result<(), String> {
    if scope.is_empty()
        || !scope
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(format!("{scope:?} is not a valid OAuth scope token"));
    }
    Ok(())
}

fn parse_provider(
    value: &serde_json::Value,
    path: &str,
    resource: &str,
) -> Result<Provider, ConfigError> {
    let obj = Obj::new(value, path)?;
    obj.only(PROVIDER_KEYS)?;
    let issuer = obj.required_str("issuer")?.to_string();
    if issuer.is_empty() {
        return Err(obj.error("issuer", "must not be empty".into()));
    }
    let audiences = obj
        .optional_str_list("audiences")?
        .unwrap_or_else(|| vec![resource.to_string()]);
    let jwks = parse_jwks(&obj)?;
    let algorithms = match obj.optional_str_list("algorithms")? {
        None => Algorithm::ALL.to_vec(),
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                Algorithm::parse(n).map_err(|m| obj.error(&format!("algorithms[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
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
    let token_types = match obj.optional_str_list("token_types")? {
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
    };
    let require_token_type = obj.optional_bool("require_token_type")?.unwrap_or(false);
    Ok(Provider {
        issuer,
        audiences,
        jwks,
        algorithms,
        clock_skew_seconds,
        roles_claims,
        scopes_claim,
        token_types,
        require_token_type,
    })
}

fn parse_jwks(provider: &Obj) -> Result<JwksSource, ConfigError> {
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
            let (keys, _skipped) = parsed.map_err(|e| obj.error("inline", e.to_string()))?;
            if keys.is_empty() {
                return Err(obj.error(
                    "inline",
                    "holds no key usable for signature verification".into(),
                ));
            }
            Ok(JwksSource::Inline(keys))
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
            Ok(JwksSource::Remote(RemoteJwks {
                cluster,
                url,
                refresh_seconds,
                timeout_ms,
            }))
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
    Ok(Rule {
        name,
        effect,
        methods,
        names,
        roles,
        scopes,
    })
}

fn parse_identity_headers(top: &Obj) -> Result<Vec<IdentityHeader>, ConfigError> {
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

fn is_header_name_byte(b: u8) -> bool {
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

/// A JSON object being validated, with its path for error messages.
struct Obj<'a> {
    path: String,
    map: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> Obj<'a> {
    fn new(value: &'a serde_json::Value, path: &str) -> Result<Obj<'a>, ConfigError> {
        match value.as_object() {
            Some(map) => Ok(Obj {
                path: path.to_string(),
                map,
            }),
            None => Err(ConfigError {
                field: path.to_string(),
                message: format!("must be an object, found {}", kind(value)),
            }),
        }
    }

    fn field(&self, key: &str) -> String {
        match (self.path.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}.{key}", self.path),
        }
    }

    fn error(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            field: self.field(key),
            message,
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(self.error(
                unknown,
                format!("unknown key; expected one of: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &str, found: &serde_json::Value) -> ConfigError {
        self.error(key, format!("must be {expected}, found {}", kind(found)))
    }

    fn optional_str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn required_str(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.optional_str(key)?
            .ok_or_else(|| self.error(key, "is required".into()))
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    fn optional_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    fn optional_obj(&self, key: &str) -> Result<Option<Obj<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Obj::new(v, &self.field(key)).map(Some),
        }
    }

    fn required_obj(&self, key: &str) -> Result<Obj<'a>, ConfigError> {
        self.optional_obj(key)?
            .ok_or_else(|| self.error(key, "is required".into()))
    }

    fn required_list(&self, key: &str) -> Result<&'a Vec<serde_json::Value>, ConfigError> {
        match self.get(key) {
            None => Err(self.error(key, "is required".into())),
            Some(serde_json::Value::Array(list)) if list.is_empty() => {
                Err(self.error(key, "must not be empty".into()))
            }
            Some(serde_json::Value::Array(list)) => Ok(list),
            Some(other) => Err(self.wrong(key, "a list", other)),
        }
    }

    /// A non-empty list of strings, when present.
    fn optional_str_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        let list = self.required_list(key)?;
        list.iter()
            .enumerate()
            .map(|(i, v)| match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                other => Err(self.wrong(&format!("{key}[{i}]"), "a string", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn required_str_list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        self.optional_str_list(key)?
            .ok_or_else(|| self.error(key, "is required".into()))
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const JWK: &str = r#"{"kty": "RSA", "kid": "t1", "use": "sig", "alg": "RS256", "n": "yVl4Lykd8qS97tw03v1Sd41Oz2vaTdX7Fb7JL-EX0fvdhLmKsTD-Ktt_EAzVQWb2R-mvcAQ2vFpavwUNZG8HQo-xsPOiZrMoBUJMWHkI4g0v8Zpw7NuPgHzmu-YQC1fftlKBVfmAFZXPyRU7PMCM46abOS6VhXOYKYOY7r9uilKYAZFx7Ss_gjXjs_fakudlFoo1vC6ZBdW7jq2QQuA8sR3fr0j964uJKljSQdA9ajspS_mCGTb2E7Yg8ikbna5f7j0bsp3RAorCPs8xBKWBoSw-8hEW6dS_P2S4OR24UFBGMr9vimNroAsU0ZykpixhI1aVvq34Zp6041wYGiF-uQ", "e": "AQAB"}"#;

    fn base() -> Value {
        let jwk: Value = serde_json::from_str(JWK).expect("test JWK");
        json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": "https://idp.example.com/realms/mcp", "jwks": {"inline": {"keys": [jwk]}}}],
            "rules": [{"name": "lists", "effect": "allow", "methods": ["tools/list"]}]
        })
    }

    /// Applies `edit` to the base configuration and returns the error.
    fn refused(edit: impl FnOnce(&mut Value)) -> ConfigError {
        let mut config = base();
        edit(&mut config);
        Policy::from_value(&config).expect_err("configuration should be refused")
    }

    #[test]
    fn base_configuration_is_accepted_with_defaults() {
        let policy = Policy::from_value(&base()).expect("valid");
        assert_eq!(
            policy.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            policy.metadata_paths,
            vec![
                "/.well-known/oauth-protected-resource/mcp",
                "/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(
            policy.authorization_servers,
            vec!["https://idp.example.com/realms/mcp"]
        );
        assert_eq!(
            policy.providers[0].audiences,
            vec!["https://mcp.example.com/mcp"]
        );
        assert_eq!(policy.providers[0].algorithms, Algorithm::ALL.to_vec());
        assert_eq!(policy.providers[0].clock_skew_seconds, 60);
        assert_eq!(
            policy.providers[0].roles_claims,
            vec![vec!["roles".to_string()]]
        );
        assert_eq!(policy.max_body_bytes, 1024 * 1024);
        assert!(policy.filter_lists);
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.token_forwarding, TokenForwarding::Strip);
    }

    #[test]
    fn metadata_url_inserts_the_well_known_segment_before_the_path() {
        let at = |resource: &str| metadata_locations(resource).expect("valid").0;
        assert_eq!(
            at("https://h.example/"),
            "https://h.example/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            at("https://h.example"),
            "https://h.example/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            at("https://h:8443/a/b/"),
            "https://h:8443/.well-known/oauth-protected-resource/a/b"
        );
        assert_eq!(
            metadata_locations("https://h.example")
                .expect("valid")
                .1
                .len(),
            1
        );
    }

    #[test]
    fn each_error_class_is_refused_naming_the_field() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("colour", Box::new(|c| c["colour"] = json!("blue"))),
            (
                "providers[0].colour",
                Box::new(|c| c["providers"][0]["colour"] = json!(1)),
            ),
            (
                "rules[0].colour",
                Box::new(|c| c["rules"][0]["colour"] = json!(1)),
            ),
            (
                "filter_lists",
                Box::new(|c| c["filter_lists"] = json!("yes")),
            ),
            (
                "max_body_bytes",
                Box::new(|c| c["max_body_bytes"] = json!(-1)),
            ),
            (
                "max_body_bytes",
                Box::new(|c| c["max_body_bytes"] = json!(0)),
            ),
            (
                "resource",
                Box::new(|c| {
                    c.as_object_mut().map(|o| o.remove("resource"));
                }),
            ),
            ("resource", Box::new(|c| c["resource"] = json!("/mcp"))),
            (
                "resource",
                Box::new(|c| c["resource"] = json!("https://mcp.example.com/mcp#frag")),
            ),
            ("resource", Box::new(|c| c["resource"] = json!("urn:mcp"))),
            ("providers", Box::new(|c| c["providers"] = json!([]))),
            ("rules", Box::new(|c| c["rules"] = json!([]))),
            ("rules", Box::new(|c| c["rules"] = json!({}))),
            (
                "rules[0].methods[0]",
                Box::new(|c| c["rules"][0]["methods"] = json!([""])),
            ),
            (
                "rules[0].names[0]",
                Box::new(|c| c["rules"][0]["names"] = json!(["a\u{0}"])),
            ),
            (
                "rules[0].methods",
                Box::new(|c| c["rules"][0]["methods"] = json!([])),
            ),
            (
                "rules[0].effect",
                Box::new(|c| c["rules"][0]["effect"] = json!("maybe")),
            ),
            (
                "rules[0].scopes[0]",
                Box::new(|c| c["rules"][0]["scopes"] = json!(["a b"])),
            ),
            (
                "providers[0].jwks.inline",
                Box::new(|c| c["providers"][0]["jwks"]["inline"] = json!("not json")),
            ),
            (
                "providers[0].jwks.inline",
                Box::new(|c| c["providers"][0]["jwks"]["inline"] = json!({"keys": []})),
            ),
            (
                "providers[0].jwks",
                Box::new(|c| c["providers"][0]["jwks"] = json!({})),
            ),
            (
                "providers[0].jwks.remote.cluster",
                Box::new(|c| c["providers"][0]["jwks"] = json!({"remote": {}})),
            ),
            (
                "providers[0].jwks.remote.refresh_seconds",
                Box::new(|c| {
                    c["providers"][0]["jwks"] =
                        json!({"remote": {"cluster": "idp", "refresh_seconds": 1}})
                }),
            ),
            (
                "providers[0].jwks.remote.url",
                Box::new(|c| {
                    c["providers"][0]["jwks"] =
                        json!({"remote": {"cluster": "idp", "url": "ftp://x"}})
                }),
            ),
            (
                "providers[0].algorithms[0]",
                Box::new(|c| c["providers"][0]["algorithms"] = json!(["HS256"])),
            ),
            (
                "providers[0].algorithms[0]",
                Box::new(|c| c["providers"][0]["algorithms"] = json!(["none"])),
            ),
            (
                "providers[0].algorithms[0]",
                Box::new(|c| c["providers"][0]["algorithms"] = json!(["XY999"])),
            ),
            (
                "providers[0].clock_skew_seconds",
                Box::new(|c| c["providers"][0]["clock_skew_seconds"] = json!(3600)),
            ),
            (
                "providers[0].roles_claims[0]",
                Box::new(|c| c["providers"][0]["roles_claims"] = json!(["a..b"])),
            ),
            (
                "providers[0].token_types",
                Box::new(|c| c["providers"][0]["token_types"] = json!([])),
            ),
            (
                "providers[0].token_types[1]",
                Box::new(|c| c["providers"][0]["token_types"] = json!(["at+jwt", "at jwt"])),
            ),
            (
                "providers[0].require_token_type",
                Box::new(|c| c["providers"][0]["require_token_type"] = json!("yes")),
            ),
            (
                "providers[1].issuer",
                Box::new(|c| {
                    let p = c["providers"][0].clone();
                    c["providers"] = json!([p.clone(), p]);
                }),
            ),
            (
                "token_forwarding",
                Box::new(|c| c["token_forwarding"] = json!("sometimes")),
            ),
            ("mode", Box::new(|c| c["mode"] = json!("permissive"))),
            (
                "public_paths[0]",
                Box::new(|c| c["public_paths"] = json!(["healthz"])),
            ),
            (
                "identity_headers.authorization",
                Box::new(|c| c["identity_headers"] = json!({"authorization": "sub"})),
            ),
            (
                "identity_headers.x bad",
                Box::new(|c| c["identity_headers"] = json!({"x bad": "sub"})),
            ),
            (
                "identity_headers.x-who",
                Box::new(|c| c["identity_headers"] = json!({"x-who": "$nope"})),
            ),
            (
                "identity_headers.x-who",
                Box::new(|c| c["identity_headers"] = json!({"x-who": 3})),
            ),
            (
                "scopes_supported[0]",
                Box::new(|c| c["scopes_supported"] = json!(["has space"])),
            ),
            (
                "authorization_servers[0]",
                Box::new(|c| c["authorization_servers"] = json!(["not a url"])),
            ),
        ];
        for (field, edit) in cases {
            let error = refused(edit);
            assert_eq!(error.field, field, "{error}");
            assert!(error.to_string().contains(field), "{error}");
        }
    }

    #[test]
    fn configuration_that_is_not_json_is_refused() {
        let error = Policy::from_json("{nope").expect_err("refused");
        assert!(error.to_string().contains("not valid JSON"));
        assert!(Policy::from_json("[]").is_err());
    }

    #[test]
    fn inline_jwks_may_be_a_json_string() {
        let mut config = base();
        let text = config["providers"][0]["jwks"]["inline"].to_string();
        config["providers"][0]["jwks"]["inline"] = json!(text);
        assert!(Policy::from_value(&config).is_ok());
    }
}
