//! The configuration of calls to an authorization server: a provider's
//! `introspection` (RFC 7662) and the top-level `upstream_token` (RFC 8693
//! token exchange), with the client authentication both share.

use super::object::Obj;
use super::*;
use crate::uri::HttpUri;

/// A client secret: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: &str) -> Secret {
        Secret(text.to_string())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the filter authenticates to the authorization server (RFC 6749
/// 2.3.1, OpenID Connect Core 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the form-encoded id and secret.
    SecretBasic(Secret),
    /// `client_id` and `client_secret` in the form body.
    SecretPost(Secret),
    /// A JWT signed with the client's key (RFC 7523), in the form body.
    PrivateKeyJwt(ClientKey),
}

impl ClientAuth {
    /// The method's name, as `client_auth` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            ClientAuth::SecretBasic(_) => "client_secret_basic",
            ClientAuth::SecretPost(_) => "client_secret_post",
            ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
        }
    }
}

/// The client's ES256 signing key (a P-256 private JWK): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey {
    /// The private scalar `d`, 32 bytes.
    pub d: Vec<u8>,
    pub kid: Option<String>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey(kid {:?}, <redacted>)", self.kid)
    }
}

impl ClientKey {
    /// Reads a private P-256 JWK (`kty` EC, `crv` P-256, `d`).
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<ClientKey, String> {
        use base64::Engine;
        let text = |name: &str| jwk.get(name).and_then(|v| v.as_str());
        if text("kty") != Some("EC") || text("crv") != Some("P-256") {
            return Err("must be a private EC P-256 JWK (kty \"EC\", crv \"P-256\", d)".into());
        }
        let d = text("d")
            .and_then(|d| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(d)
                    .ok()
            })
            .filter(|d| p256::ecdsa::SigningKey::from_slice(d).is_ok())
            .ok_or("has no usable private key \"d\"")?;
        Ok(ClientKey {
            d,
            kid: text("kid").map(str::to_string),
        })
    }
}

/// The filter as a client of the authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub auth: ClientAuth,
}

/// Where a call to the authorization server goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The Envoy cluster the call goes through.
    pub cluster: String,
    /// `None`: discovered from the issuer's metadata (RFC 8414, then OpenID
    /// discovery).
    pub url: Option<String>,
    pub timeout_ms: u64,
}

/// A provider's token introspection (RFC 7662).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    pub endpoint: Endpoint,
    pub client: Client,
    /// An "active" answer is reused at most this long (and never past the
    /// token's `exp`).
    pub cache_seconds: u64,
}

/// The token the upstream gets: the caller's token exchanged (RFC 8693).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamToken {
    /// Index of the provider whose tokens are exchanged (and whose
    /// authorization server exchanges them).
    pub provider: usize,
    pub endpoint: Endpoint,
    pub client: Client,
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// Space-separated scopes asked for.
    pub scope: Option<String>,
    /// Lower-case header name; `authorization` carries `Bearer <token>`,
    /// any other header the token alone.
    pub header: String,
    /// Whether exchanged tokens are reused until shortly before they expire.
    pub cache: bool,
}

/// `providers[].introspection`, when present.
pub(super) fn parse_introspection(provider: &Obj) -> Result<Option<Introspection>, ConfigError> {
    let Some(obj) = provider.optional_obj("introspection")? else {
        return Ok(None);
    };
    obj.only(INTROSPECTION_KEYS)?;
    let endpoint = parse_endpoint(&obj, "url")?;
    let client = parse_client(&obj)?;
    let cache_seconds = obj
        .optional_u64("cache_seconds")?
        .unwrap_or(defaults::INTROSPECTION_CACHE_SECONDS);
    if cache_seconds > defaults::MAX_INTROSPECTION_CACHE_SECONDS {
        return Err(obj.error(
            "cache_seconds",
            format!(
                "must be at most {}",
                defaults::MAX_INTROSPECTION_CACHE_SECONDS
            ),
        ));
    }
    Ok(Some(Introspection {
        endpoint,
        client,
        cache_seconds,
    }))
}

/// The top-level `upstream_token`, when present.
pub(super) fn parse_upstream_token(
    top: &Obj,
    providers: &[Provider],
    token_forwarding: TokenForwarding,
    identity_headers: &[IdentityHeader],
) -> Result<Option<UpstreamToken>, ConfigError> {
    let Some(obj) = top.optional_obj("upstream_token")? else {
        return Ok(None);
    };
    obj.only(UPSTREAM_TOKEN_KEYS)?;
    let provider = parse_exchanging_provider(&obj, providers)?;
    let endpoint = parse_endpoint(&obj, "token_endpoint")?;
    let client = parse_client(&obj)?;
    let audience = obj.optional_str("audience")?.map(str::to_string);
    let resource = match obj.optional_str("resource")? {
        Some(url) => {
            HttpUri::parse(url).map_err(|m| obj.error("resource", m))?;
            Some(url.to_string())
        }
        None => None,
    };
    if audience.is_none() && resource.is_none() {
        return Err(obj.error(
            "",
            "needs an \"audience\" or a \"resource\" (or both): the token the upstream gets must be issued for it"
                .into(),
        ));
    }
    if audience.as_deref() == Some("") {
        return Err(obj.error("audience", "must not be empty".into()));
    }
    let scope = obj.optional_str("scope")?.map(str::to_string);
    if let Some(scope) = &scope {
        if scope.split(' ').any(|s| !is_scope_token(s)) {
            return Err(obj.error("scope", "must be space-separated OAuth scope tokens".into()));
        }
    }
    let header = parse_upstream_header(&obj, identity_headers)?;
    if token_forwarding == TokenForwarding::Forward {
        return Err(obj.error(
            "",
            "cannot be used with \"token_forwarding\": \"forward\": the caller's token must not reach the upstream"
                .into(),
        ));
    }
    Ok(Some(UpstreamToken {
        provider,
        endpoint,
        client,
        audience,
        resource,
        scope,
        header,
        cache: obj.optional_bool("cache")?.unwrap_or(true),
    }))
}

/// The provider whose tokens `upstream_token` exchanges: the one named by
/// its issuer, or the only one.
fn parse_exchanging_provider(obj: &Obj, providers: &[Provider]) -> Result<usize, ConfigError> {
    match obj.optional_str("provider")? {
        Some(issuer) => providers
            .iter()
            .position(|p| p.issuer == issuer)
            .ok_or_else(|| obj.error("provider", "names no configured provider's issuer".into())),
        None if providers.len() == 1 => Ok(0),
        None => Err(obj.error(
            "provider",
            "is required when several providers are configured".into(),
        )),
    }
}

/// The header the exchanged token goes upstream in (lower-case): a valid
/// name, not one the proxy or the filter uses for something else.
fn parse_upstream_header(
    obj: &Obj,
    identity_headers: &[IdentityHeader],
) -> Result<String, ConfigError> {
    let header = obj
        .optional_str("header")?
        .unwrap_or(defaults::UPSTREAM_TOKEN_HEADER)
        .to_ascii_lowercase();
    if header.is_empty() || !header.bytes().all(super::parse::is_header_name_byte) {
        return Err(obj.error("header", "is not a valid HTTP header name".into()));
    }
    if header != "authorization"
        && (RESERVED_HEADERS.contains(&header.as_str()) || header.starts_with(':'))
    {
        return Err(obj.error("header", "is reserved and cannot carry a token".into()));
    }
    if identity_headers.iter().any(|h| h.name == header) {
        return Err(obj.error("header", "is also an identity header".into()));
    }
    Ok(header)
}

/// `cluster`, the URL under `url_key` (absent: discovered) and `timeout_ms`.
fn parse_endpoint(obj: &Obj, url_key: &str) -> Result<Endpoint, ConfigError> {
    let cluster = obj.required_str("cluster")?.to_string();
    if cluster.is_empty() {
        return Err(obj.error("cluster", "must name an Envoy cluster".into()));
    }
    let url = match obj.optional_str(url_key)? {
        Some(u) => {
            HttpUri::parse(u).map_err(|m| obj.error(url_key, m))?;
            Some(u.to_string())
        }
        None => None,
    };
    let timeout_ms = obj
        .optional_u64("timeout_ms")?
        .unwrap_or(defaults::TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > defaults::MAX_TIMEOUT_MS {
        return Err(obj.error(
            "timeout_ms",
            format!("must be between 1 and {}", defaults::MAX_TIMEOUT_MS),
        ));
    }
    Ok(Endpoint {
        cluster,
        url,
        timeout_ms,
    })
}

/// `client_id`, `client_auth` and the secret (or key): inline
/// (`client_secret`, `client_key`) or, better, from the VM's environment
/// (`client_secret_env`, `client_key_env`, which Envoy fills from
/// `vm_config.environment_variables`), so that the configuration text holds
/// no secret.
fn parse_client(obj: &Obj) -> Result<Client, ConfigError> {
    let id = obj.required_str("client_id")?.to_string();
    if id.is_empty() {
        return Err(obj.error("client_id", "must not be empty".into()));
    }
    let auth = if obj.optional_str("client_auth")? == Some("private_key_jwt") {
        ClientAuth::PrivateKeyJwt(parse_client_key(obj)?)
    } else {
        parse_client_secret(obj)?
    };
    Ok(Client { id, auth })
}

/// `private_key_jwt`: the client's key, a JWK inline (`client_key`, an
/// object or its JSON text) or in the environment (`client_key_env`); no
/// secret.
fn parse_client_key(obj: &Obj) -> Result<ClientKey, ConfigError> {
    for key in ["client_secret", "client_secret_env"] {
        if obj.get(key).is_some() {
            return Err(obj.error(key, "is not used with \"private_key_jwt\"".into()));
        }
    }
    let jwk = match (obj.get("client_key"), obj.optional_str("client_key_env")?) {
        (Some(_), Some(_)) => {
            return Err(obj.error(
                "client_key",
                "give either \"client_key\" or \"client_key_env\", not both".into(),
            ))
        }
        (Some(serde_json::Value::String(text)), None) => serde_json::from_str(text)
            .map_err(|_| obj.error("client_key", "is not a JWK".into()))?,
        (Some(value), None) => value.clone(),
        (None, Some(name)) => {
            let text = std::env::var(name).map_err(|_| {
                obj.error(
                    "client_key_env",
                    format!("environment variable {name:?} is not set in the VM (vm_config.environment_variables)"),
                )
            })?;
            serde_json::from_str(&text).map_err(|_| {
                obj.error(
                    "client_key_env",
                    format!("environment variable {name:?} holds no JWK"),
                )
            })?
        }
        (None, None) => {
            return Err(obj.error(
                "client_key",
                "is required with \"private_key_jwt\" (or \"client_key_env\")".into(),
            ))
        }
    };
    let field = if obj.get("client_key").is_some() {
        "client_key"
    } else {
        "client_key_env"
    };
    ClientKey::from_jwk(&jwk).map_err(|m| obj.error(field, m))
}

/// A client secret, inline (`client_secret`) or in the environment
/// (`client_secret_env`), sent as `client_auth` says; no key.
fn parse_client_secret(obj: &Obj) -> Result<ClientAuth, ConfigError> {
    for key in ["client_key", "client_key_env"] {
        if obj.get(key).is_some() {
            return Err(obj.error(key, "is only used with \"private_key_jwt\"".into()));
        }
    }
    let secret = match (
        obj.optional_str("client_secret")?,
        obj.optional_str("client_secret_env")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(obj.error(
                "client_secret",
                "give either \"client_secret\" or \"client_secret_env\", not both".into(),
            ))
        }
        (Some(secret), None) => secret.to_string(),
        (None, Some(name)) => std::env::var(name).map_err(|_| {
            obj.error(
                "client_secret_env",
                format!("environment variable {name:?} is not set in the VM (vm_config.environment_variables)"),
            )
        })?,
        (None, None) => {
            return Err(obj.error(
                "client_secret",
                "is required (or \"client_secret_env\")".into(),
            ))
        }
    };
    if secret.is_empty() {
        return Err(obj.error("client_secret", "must not be empty".into()));
    }
    let secret = Secret::new(&secret);
    match obj.optional_str("client_auth")? {
        None | Some("client_secret_basic") => Ok(ClientAuth::SecretBasic(secret)),
        Some("client_secret_post") => Ok(ClientAuth::SecretPost(secret)),
        Some(other) => Err(obj.error(
            "client_auth",
            format!("{other:?} is not one of \"client_secret_basic\", \"client_secret_post\", \"private_key_jwt\""),
        )),
    }
}

/// RFC 6749 scope-token: printable ASCII without space, `"` or `\`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn base() -> Value {
        json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": "https://idp.example.com/realms/mcp",
                           "introspection": {"cluster": "idp", "client_id": "gw", "client_secret": "s"}}],
            "rules": [{"effect": "allow", "methods": ["tools/list"]}]
        })
    }

    fn with_exchange(exchange: Value) -> Value {
        let mut config = base();
        config["upstream_token"] = exchange;
        config
    }

    fn exchange() -> Value {
        json!({"cluster": "idp", "client_id": "gw", "client_secret": "s", "audience": "api"})
    }

    fn refused(config: Value) -> ConfigError {
        Policy::from_value(&config).expect_err("configuration should be refused")
    }

    #[test]
    fn an_introspecting_provider_needs_no_keys_and_gets_defaults() {
        let policy = Policy::from_value(&base()).expect("valid");
        let p = &policy.providers[0];
        assert!(p.jwks.is_none());
        let i = p.introspection.as_ref().expect("introspection");
        assert_eq!(i.endpoint.url, None, "discovered");
        assert_eq!(i.endpoint.timeout_ms, defaults::TIMEOUT_MS);
        assert_eq!(i.cache_seconds, defaults::INTROSPECTION_CACHE_SECONDS);
        assert_eq!(i.client.auth, ClientAuth::SecretBasic(Secret::new("s")));
        assert!(policy.upstream_token.is_none());
    }

    #[test]
    fn a_provider_needs_keys_or_introspection() {
        let mut config = base();
        config["providers"][0]
            .as_object_mut()
            .map(|p| p.remove("introspection"));
        assert_eq!(refused(config).field, "providers[0].jwks");
    }

    #[test]
    fn only_one_provider_may_introspect() {
        let mut config = base();
        let mut second = config["providers"][0].clone();
        second["issuer"] = json!("https://other.example.com");
        config["providers"] = json!([config["providers"][0].clone(), second]);
        assert_eq!(refused(config).field, "providers[1].introspection");
    }

    #[test]
    fn the_secret_comes_inline_or_from_the_environment_never_both() {
        let set = |edit: &dyn Fn(&mut Value)| {
            let mut config = base();
            edit(&mut config["providers"][0]["introspection"]);
            config
        };
        let both = set(&|i| i["client_secret_env"] = json!("PATH"));
        assert_eq!(
            refused(both).field,
            "providers[0].introspection.client_secret"
        );
        let none = set(&|i| {
            i.as_object_mut().map(|o| o.remove("client_secret"));
        });
        assert_eq!(
            refused(none).field,
            "providers[0].introspection.client_secret"
        );
        let missing = set(&|i| {
            i.as_object_mut().map(|o| o.remove("client_secret"));
            i["client_secret_env"] = json!("MCP_AUTHZ_TEST_UNSET_VARIABLE");
        });
        let error = refused(missing);
        assert_eq!(error.field, "providers[0].introspection.client_secret_env");
        assert!(error.message.contains("MCP_AUTHZ_TEST_UNSET_VARIABLE"));
        // A variable every test process has: its value becomes the secret.
        let from_env = set(&|i| {
            i.as_object_mut().map(|o| o.remove("client_secret"));
            i["client_secret_env"] = json!("PATH");
        });
        let policy = Policy::from_value(&from_env).expect("valid");
        let path = std::env::var("PATH").expect("PATH");
        let auth = &policy.providers[0]
            .introspection
            .as_ref()
            .expect("i")
            .client
            .auth;
        assert_eq!(auth, &ClientAuth::SecretBasic(Secret::new(&path)));
        assert!(
            !format!("{policy:?}").contains(&path),
            "never in debug output"
        );
    }

    #[test]
    fn introspection_fields_are_checked() {
        for (key, value, field) in [
            ("cache_seconds", json!(3601), "cache_seconds"),
            ("timeout_ms", json!(0), "timeout_ms"),
            ("url", json!("ftp://idp/introspect"), "url"),
            ("cluster", json!(""), "cluster"),
            ("client_auth", json!("tls_client_auth"), "client_auth"),
            ("client_key", json!({"kty": "EC"}), "client_key"),
            ("client_id", json!(""), "client_id"),
            ("colour", json!("blue"), "colour"),
        ] {
            let mut config = base();
            config["providers"][0]["introspection"][key] = value;
            assert_eq!(
                refused(config).field,
                format!("providers[0].introspection.{field}")
            );
        }
    }

    #[test]
    fn upstream_token_defaults_to_the_only_provider_and_authorization() {
        let policy = Policy::from_value(&with_exchange(exchange())).expect("valid");
        let u = policy.upstream_token.expect("upstream_token");
        assert_eq!(u.provider, 0);
        assert_eq!(u.header, "authorization");
        assert!(u.cache);
        assert_eq!(u.audience.as_deref(), Some("api"));
    }

    #[test]
    fn upstream_token_fields_are_checked() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"audience": null}), "upstream_token"),
            (json!({"audience": ""}), "upstream_token.audience"),
            (
                json!({"provider": "https://nobody"}),
                "upstream_token.provider",
            ),
            (json!({"resource": "not a url"}), "upstream_token.resource"),
            (json!({"scope": "a  b"}), "upstream_token.scope"),
            (json!({"header": "content-length"}), "upstream_token.header"),
            (json!({"header": "x bad"}), "upstream_token.header"),
            (json!({"header": ":path"}), "upstream_token.header"),
            (json!({"cache": "yes"}), "upstream_token.cache"),
            (json!({"colour": 1}), "upstream_token.colour"),
        ];
        for (edit, field) in cases {
            let mut exchange = exchange();
            for (k, v) in edit.as_object().expect("object") {
                exchange[k] = v.clone();
            }
            assert_eq!(refused(with_exchange(exchange)).field, field, "{edit}");
        }
    }

    #[test]
    fn upstream_token_never_goes_with_the_callers_token() {
        let mut config = with_exchange(exchange());
        config["token_forwarding"] = json!("forward");
        assert!(refused(config).message.contains("token_forwarding"));
        let mut config = with_exchange(exchange());
        config["upstream_token"]["header"] = json!("X-Who");
        config["identity_headers"] = json!({"x-who": "sub"});
        assert_eq!(refused(config).field, "upstream_token.header");
    }

    #[test]
    fn with_several_providers_upstream_token_names_one() {
        let mut config = with_exchange(exchange());
        let mut jwt = config["providers"][0].clone();
        jwt["issuer"] = json!("https://other.example.com");
        jwt.as_object_mut().map(|p| p.remove("introspection"));
        jwt["jwks"] = json!({"remote": {"cluster": "idp"}});
        config["providers"] = json!([config["providers"][0].clone(), jwt]);
        assert_eq!(refused(config.clone()).field, "upstream_token.provider");
        config["upstream_token"]["provider"] = json!("https://other.example.com");
        let policy = Policy::from_value(&config).expect("valid");
        assert_eq!(policy.upstream_token.map(|u| u.provider), Some(1));
    }
}

#[cfg(test)]
mod private_key_jwt {
    use serde_json::json;

    use super::*;

    /// A P-256 private JWK (RFC 7515 appendix A.3's key).
    fn jwk() -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256", "kid": "gw-1",
               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
               "d": "jpsQnnGQmL-YBIffH1136cLyjuNdewPbBmxkUrS6mZw"})
    }

    fn config(introspection: serde_json::Value) -> serde_json::Value {
        json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": "https://idp.example.com", "introspection": introspection}],
            "rules": [{"effect": "allow", "methods": ["tools/list"]}]
        })
    }

    #[test]
    fn a_private_jwk_is_read_and_never_shown() {
        let policy = Policy::from_value(&config(json!({"cluster": "idp", "client_id": "gw",
            "client_auth": "private_key_jwt", "client_key": jwk()})))
        .expect("valid");
        let client = &policy.providers[0]
            .introspection
            .as_ref()
            .expect("i")
            .client;
        let ClientAuth::PrivateKeyJwt(key) = &client.auth else {
            panic!("private_key_jwt expected");
        };
        assert_eq!(key.kid.as_deref(), Some("gw-1"));
        assert_eq!(key.d.len(), 32);
        assert!(!format!("{policy:?}").contains("jpsQnn"));
    }

    #[test]
    fn keys_and_secrets_go_with_their_own_method() {
        let refused =
            |i: serde_json::Value| Policy::from_value(&config(i)).expect_err("refused").field;
        assert_eq!(
            refused(
                json!({"cluster": "idp", "client_id": "gw", "client_auth": "private_key_jwt",
                           "client_key": jwk(), "client_secret": "s"})
            ),
            "providers[0].introspection.client_secret"
        );
        assert_eq!(
            refused(json!({"cluster": "idp", "client_id": "gw", "client_auth": "private_key_jwt"})),
            "providers[0].introspection.client_key"
        );
        assert_eq!(
            refused(
                json!({"cluster": "idp", "client_id": "gw", "client_secret": "s", "client_key": jwk()})
            ),
            "providers[0].introspection.client_key"
        );
        let mut public = jwk();
        public.as_object_mut().map(|o| o.remove("d"));
        assert_eq!(
            refused(
                json!({"cluster": "idp", "client_id": "gw", "client_auth": "private_key_jwt",
                           "client_key": public})
            ),
            "providers[0].introspection.client_key"
        );
        assert_eq!(
            refused(
                json!({"cluster": "idp", "client_id": "gw", "client_auth": "private_key_jwt",
                           "client_key_env": "MCP_AUTHZ_TEST_UNSET_KEY"})
            ),
            "providers[0].introspection.client_key_env"
        );
    }
}
