//! Finding an issuer's JWKS when the configuration names only the issuer:
//! RFC 8414 authorization server metadata first, then OpenID discovery.

use crate::uri::HttpUri;

/// Where to look for the issuer's metadata, in order: RFC 8414 inserts the
/// well-known segment before the issuer's path; OpenID Connect appends it.
pub fn metadata_urls(issuer: &str) -> Vec<String> {
    let issuer = issuer.trim_end_matches('/');
    let mut urls = Vec::new();
    if let Ok(uri) = HttpUri::parse(issuer) {
        urls.push(format!(
            "{}/.well-known/oauth-authorization-server{}{}",
            uri.origin(),
            uri.path,
            uri.query
        ));
    }
    urls.push(format!("{issuer}/.well-known/openid-configuration"));
    urls
}

/// The `jwks_uri` of a metadata document. RFC 8414 section 3.3: the document's
/// `issuer` must equal the configured one, or the document is not trusted.
pub fn jwks_uri(metadata: &[u8], issuer: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(metadata).map_err(|_| "metadata is not JSON".to_string())?;
    let declared = doc.get("issuer").and_then(|v| v.as_str());
    if declared.map(|d| d.trim_end_matches('/')) != Some(issuer.trim_end_matches('/')) {
        return Err("metadata names another issuer".into());
    }
    match doc.get("jwks_uri").and_then(|v| v.as_str()) {
        Some(uri) if uri.starts_with("https://") || uri.starts_with("http://") => {
            Ok(uri.to_string())
        }
        Some(_) => Err("jwks_uri is not an http(s) URL".into()),
        None => Err("metadata has no jwks_uri".into()),
    }
}

/// `https://host:8443/a/b?q` → `("host:8443", "/a/b?q")`: the `:authority`
/// and `:path` of a fetch through an Envoy cluster.
pub fn authority_and_path(url: &str) -> Option<(String, String)> {
    let uri = HttpUri::parse(url).ok()?;
    Some((uri.authority.to_string(), uri.request_path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_tries_rfc8414_then_openid() {
        assert_eq!(
            metadata_urls("https://idp.example.com/realms/mcp"),
            vec![
                "https://idp.example.com/.well-known/oauth-authorization-server/realms/mcp",
                "https://idp.example.com/realms/mcp/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            metadata_urls("http://127.0.0.1:9000"),
            vec![
                "http://127.0.0.1:9000/.well-known/oauth-authorization-server",
                "http://127.0.0.1:9000/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn jwks_uri_needs_the_same_issuer() {
        let doc = br#"{"issuer":"https://idp/x","jwks_uri":"https://idp/x/certs"}"#;
        assert_eq!(
            jwks_uri(doc, "https://idp/x"),
            Ok("https://idp/x/certs".into())
        );
        assert!(jwks_uri(doc, "https://evil/x").is_err());
        assert!(jwks_uri(br#"{"issuer":"https://idp/x"}"#, "https://idp/x").is_err());
        assert!(jwks_uri(b"nope", "https://idp/x").is_err());
        assert!(jwks_uri(
            br#"{"issuer":"https://idp/x","jwks_uri":"file:///etc"}"#,
            "https://idp/x"
        )
        .is_err());
    }

    #[test]
    fn fetch_target_is_authority_and_path() {
        assert_eq!(
            authority_and_path("https://idp:8443/realms/mcp/certs?x=1"),
            Some(("idp:8443".into(), "/realms/mcp/certs?x=1".into()))
        );
        assert_eq!(
            authority_and_path("http://idp"),
            Some(("idp".into(), "/".into()))
        );
        assert_eq!(authority_and_path("idp/x"), None);
    }
}
