//! The filter authenticating itself to the authorization server as a
//! confidential client (RFC 6749 section 2.3.1).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::form_component;
use crate::config::{Client, ClientAuth};

/// Adds what `client`'s authentication puts in the form to `params`, and
/// returns the `Authorization` header value it needs, if any.
pub fn apply<'a>(client: &'a Client, params: &mut Vec<(&'a str, &'a str)>) -> Option<String> {
    match &client.auth {
        ClientAuth::SecretBasic(secret) => {
            // The id and secret are form-encoded before they are joined
            // (RFC 6749 2.3.1), so a `:` in either cannot split them wrongly.
            let pair = format!(
                "{}:{}",
                form_component(&client.id),
                form_component(secret.expose())
            );
            Some(format!("Basic {}", STANDARD.encode(pair)))
        }
        ClientAuth::SecretPost(secret) => {
            params.push(("client_id", &client.id));
            params.push(("client_secret", secret.expose()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn basic_authentication_form_encodes_id_and_secret_first() {
        let client = Client {
            id: "mcp gw".into(),
            auth: ClientAuth::SecretBasic(Secret::new("a:b%")),
        };
        let mut params = vec![("token", "t")];
        let header = apply(&client, &mut params).expect("a header");
        assert_eq!(params, vec![("token", "t")], "nothing in the form");
        let decoded = STANDARD
            .decode(header.strip_prefix("Basic ").expect("Basic"))
            .expect("base64");
        assert_eq!(decoded, b"mcp+gw:a%3Ab%25");
    }

    #[test]
    fn post_authentication_puts_id_and_secret_in_the_form() {
        let client = Client {
            id: "gw".into(),
            auth: ClientAuth::SecretPost(Secret::new("s")),
        };
        let mut params = vec![("token", "t")];
        assert_eq!(apply(&client, &mut params), None);
        assert_eq!(
            params,
            vec![("token", "t"), ("client_id", "gw"), ("client_secret", "s")]
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let client = Client {
            id: "gw".into(),
            auth: ClientAuth::SecretBasic(Secret::new("hunter2")),
        };
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
