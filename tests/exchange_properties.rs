//! The hold invariant, over every order of events: random requests and
//! answers, cut into random chunks (a few, or many down to one byte each),
//! with or without trailers, with the key wait ending anywhere, driven
//! through the filter's state machine (`exchange::Exchange`) against a
//! model of what Envoy does with each "hold" and "continue". Answers come
//! with a body, with an empty one, or with none (the headers end the
//! stream, or only trailers follow); compressed ones carry real gzip or
//! deflate bytes under every spelling of `Content-Encoding`, and the client
//! decodes what it gets as its headers say.
//!
//! Checked for every sequence:
//! - nothing of a request reaches the upstream unless its verdict is
//!   "allowed" (or the mode is audit, or it needs no token), and never after
//!   a local answer; an allowed request goes on only once its body ended;
//! - every request ends answered or forwarded, never both, never neither;
//! - what goes upstream carries no client token, no DPoP proof (in headers
//!   or trailers) and no client-sent identity header in any spelling, and
//!   the verified identity's own;
//! - a token bound to a DPoP key passes only with the `DPoP` scheme and a
//!   proof good for the request (right method and key, never taken
//!   before); sent as a bearer token it never passes;
//! - no byte of a list answer reaches the client before it was filtered: a
//!   tool nobody may call never shows, whatever the media type, encoding,
//!   chunking, trailers or echoed id; the headers a client gets match the
//!   body it gets (length, encoding); an error replacing an answer has
//!   headers that match it; nothing stays held at the end;
//! - answers that need no filtering pass byte for byte;
//! - with two servers behind the filter (`servers`), a request is decided
//!   under the server its path names, or refused when it names none or
//!   could be read as another's (`/a/../b/mcp`, `//a/mcp`, `/A/mcp`,
//!   `/%61/mcp`, `/a;x/mcp`); a token goes through only at the server of
//!   its audience, and the published call header is the filter's, never
//!   the client's.

use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use mcp_authz::answer::Answer as FilterAnswer;
use mcp_authz::authorization_server::shared;
use mcp_authz::authorization_server::{Call, CallAnswer, Purpose, MAX_CALLS_IN_FLIGHT};
use mcp_authz::config::{Gateway, Mode, Policy};
use mcp_authz::dpop::replay;
use mcp_authz::exchange::{Action, Effect, Env, Exchange, Host, Output, ResponseHead, SharedData};
use mcp_authz::gate::{KeyRing, RequestHead};
use mcp_authz::keys::jwks::KeySet;
use mcp_authz::mcp::param_headers::ParamHeader;
use mcp_authz::shared_data::SharedMap;
use mcp_authz::token_cache::VerifiedTokenCache;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const A: &str = "https://a.example";
const B: &str = "https://b.example";
const RESOURCE: &str = "https://mcp.example.com/mcp";
/// The two servers of the `servers` layout.
const RESOURCE_A: &str = "https://mcp.example.com/a/mcp";
const RESOURCE_B: &str = "https://mcp.example.com/b/mcp";
const NOW: u64 = 1_750_000_000;
const MAX_BODY: usize = 2048;
/// The tool nobody may call: it must never show in a list a client gets.
const FORBIDDEN: &str = "delete_everything";

struct Keys {
    a: Ed25519KeyPair,
    forger: Ed25519KeyPair,
    b1: Ed25519KeyPair,
    b2: Ed25519KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        a: Ed25519KeyPair::generate().with_key_id("a1"),
        forger: Ed25519KeyPair::generate().with_key_id("a1"),
        b1: Ed25519KeyPair::generate().with_key_id("b1"),
        b2: Ed25519KeyPair::generate().with_key_id("b2"),
    })
}

fn jwk(pair: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
           "x": URL_SAFE_NO_PAD.encode(pair.public_key().to_bytes())})
}

fn key_set(jwks: Vec<Value>) -> Rc<KeySet> {
    Rc::new(
        KeySet::from_value(&json!({ "keys": jwks }))
            .expect("test keys")
            .0,
    )
}

fn policy(audit: bool, filter_lists: bool) -> Policy {
    Policy::from_value(&json!({
        "resource": RESOURCE,
        "providers": [
            {"issuer": A, "jwks": {"inline": {"keys": [jwk(&keys().a, "a1")]}}, "dpop": "allowed"},
            {"issuer": B, "jwks": {"remote": {"cluster": "idp", "url": "https://b.example/keys"}}}
        ],
        "rules": [
            {"name": "everyone lists", "effect": "allow", "methods": ["tools/list", "ping"]},
            {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"], "roles": ["reader", "admin"]},
            {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"], "roles": ["admin"]},
            {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]}
        ],
        "identity_headers": {"x-mcp-roles": "$roles"},
        "max_body_bytes": MAX_BODY,
        "mode": if audit { "audit" } else { "enforce" },
        "filter_lists": filter_lists,
        "public_paths": ["/healthz"]
    }))
    .expect("test policy")
}

/// Two servers, `a` under `/a` and `b` under `/b`, each its own resource
/// with the rules of `policy`; the called tool's name is published in
/// `x-mcp-tool`.
fn two_servers(audit: bool, filter_lists: bool) -> Gateway {
    let rules = json!([
        {"name": "everyone lists", "effect": "allow", "methods": ["tools/list", "ping"]},
        {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"], "roles": ["reader", "admin"]},
        {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"], "roles": ["admin"]},
        {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]}
    ]);
    let server = |name: &str, resource: &str, public: &[&str]| {
        json!({
            "name": name, "match": {"path_prefix": format!("/{name}")}, "resource": resource,
            "rules": rules, "identity_headers": {"x-mcp-roles": "$roles"},
            "mode": if audit { "audit" } else { "enforce" },
            "filter_lists": filter_lists, "public_paths": public
        })
    };
    Gateway::from_value(&json!({
        "providers": [
            {"issuer": A, "jwks": {"inline": {"keys": [jwk(&keys().a, "a1")]}}, "dpop": "allowed"},
            {"issuer": B, "jwks": {"remote": {"cluster": "idp", "url": "https://b.example/keys"}}}
        ],
        "servers": [server("a", RESOURCE_A, &["/a/healthz"]), server("b", RESOURCE_B, &["/b/healthz"])],
        "max_body_bytes": MAX_BODY,
        "publish": {"headers": {"x-mcp-tool": "name"}}
    }))
    .expect("two servers")
}

fn sign(pair: &Ed25519KeyPair, iss: &str, roles: &[&str], typ: Option<&str>) -> String {
    sign_bound(pair, iss, roles, typ, None)
}

/// A token; bound to the key with thumbprint `jkt` when given.
fn sign_bound(
    pair: &Ed25519KeyPair,
    iss: &str,
    roles: &[&str],
    typ: Option<&str>,
    jkt: Option<&str>,
) -> String {
    let mut custom: Map<String, Value> = json!({
        "iss": iss, "aud": AUDIENCE.with(|a| a.get()), "sub": "alice", "roles": roles,
        "iat": NOW - 10, "exp": NOW + 300,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    if let Some(jkt) = jkt {
        custom.insert("cnf".into(), json!({ "jkt": jkt }));
    }
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(1));
    claims.issued_at = None;
    claims.expires_at = None;
    claims.invalid_before = None;
    let options = HeaderOptions {
        signature_type: typ.map(str::to_string),
        ..Default::default()
    };
    pair.sign_with_options(claims, &options).expect("sign")
}

thread_local! {
    /// The audience the scenario's tokens are minted for.
    static AUDIENCE: std::cell::Cell<&'static str> = const { std::cell::Cell::new(RESOURCE) };
}

// ---------------------------------------------------------------------------
// Scenarios

/// Which server a path is for in the two-server layout, as written by hand
/// (the oracle: it does not call the filter's matching).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// The MCP endpoint of server `a` or `b` (of the one server, in the
    /// single layout: `'-'`).
    Endpoint(char),
    /// A public path.
    Public,
    /// A metadata URI, answered by the filter.
    Metadata,
    /// No server's: refused.
    NoServer,
    /// Read one way as sent and another in a lenient form: refused.
    Ambiguous,
}

/// The paths of the two-server layout and the server each is for.
const TWO_SERVER_PATHS: &[(&str, Target)] = &[
    ("/a/mcp", Target::Endpoint('a')),
    ("/a/mcp", Target::Endpoint('a')),
    ("/b/mcp", Target::Endpoint('b')),
    ("/b/mcp", Target::Endpoint('b')),
    ("/a/mcp/", Target::Endpoint('a')),
    ("/b", Target::Endpoint('b')),
    ("/a/healthz", Target::Public),
    ("/a/../b/mcp", Target::Ambiguous),
    ("/b/%2e%2e/a/mcp", Target::Ambiguous),
    ("//a/mcp", Target::Ambiguous),
    ("/A/mcp", Target::Ambiguous),
    ("/%61/mcp", Target::Ambiguous),
    ("/a%2Fmcp", Target::Ambiguous),
    ("/b\\..\\a/mcp", Target::Ambiguous),
    ("/a;x/mcp", Target::Ambiguous),
    ("/c/mcp", Target::NoServer),
    ("/ab/mcp", Target::NoServer),
    ("/", Target::NoServer),
    (
        "/.well-known/oauth-protected-resource/a/mcp",
        Target::Metadata,
    ),
    ("/.well-known/oauth-protected-resource", Target::NoServer),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    None,
    ReaderA,
    AdminA,
    ForgedA,
    LogoutA,
    /// Provider B's key `b1`.
    ReaderB,
    /// Provider B's key `b2`, which only a refetch may bring.
    NewKidB,
    /// Provider A (`dpop: allowed`), an admin, bound to the client's DPoP
    /// key, sent with the `DPoP` scheme.
    BoundA,
    /// The same, sent as a bearer token (the downgrade).
    BoundAsBearer,
}

/// The `DPoP` header(s) a request carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Proof {
    None,
    /// Right for the request and the token.
    Valid,
    /// Signed for another method.
    WrongMethod,
    /// By another key than the token's.
    OtherKey,
    /// Valid, but the proxy took it before.
    Replayed,
    /// Two headers.
    Two,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Payload {
    Empty,
    AllowedCall,
    DeniedCall,
    List,
    BatchListAndDelete,
    Malformed,
    Oversize,
}

#[derive(Debug, Clone)]
struct Request {
    /// Two servers behind the filter (`servers`), or one.
    two_servers: bool,
    /// Where the path leads (always known: the oracle's).
    target: Target,
    /// The tokens are for server `b` (else `a`) in the two-server layout.
    audience_b: bool,
    /// Before it, the same token made an allowed call at the server of its
    /// audience (so the filter knows it verified).
    warm: bool,
    audit: bool,
    filter_lists: bool,
    method: &'static str,
    path: &'static str,
    preflight_headers: bool,
    content_type: &'static [&'static str],
    token: Token,
    proof: Proof,
    payload: Payload,
    /// How the body is cut into chunks.
    chunks: Chunking,
    trailers: bool,
    /// Provider B's keys before the request: never fetched, or `b1`.
    b_fetched: bool,
    /// What a key wait brings: provider B's keys after it (`None`: nothing
    /// came).
    b_after_wait: Option<bool>,
    refetch_granted: bool,
    /// Where the end of the key wait falls among the request's events.
    settle_at: u8,
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop::sample::select(vec![
        "POST", "post", "Post", "GET", "get", "DELETE", "OPTIONS", "PUT", "PATCH", "HEAD",
    ]);
    let path = prop::sample::select(vec![
        "/mcp",
        "/mcp",
        "/mcp",
        "/other",
        "/healthz",
        "/.well-known/oauth-protected-resource/mcp",
    ]);
    let content_type: BoxedStrategy<&'static [&'static str]> = prop::sample::select(vec![
        &["application/json"][..],
        &["application/json; charset=utf-8"][..],
        &["text/plain"][..],
        &[][..],
        &["application/json", "application/json"][..],
    ])
    .boxed();
    let token = prop::sample::select(vec![
        Token::None,
        Token::ReaderA,
        Token::ReaderA,
        Token::AdminA,
        Token::AdminA,
        Token::ForgedA,
        Token::LogoutA,
        Token::ReaderB,
        Token::NewKidB,
        Token::BoundA,
        Token::BoundA,
        Token::BoundAsBearer,
    ]);
    let proof = prop::sample::select(vec![
        Proof::None,
        Proof::Valid,
        Proof::Valid,
        Proof::Valid,
        Proof::WrongMethod,
        Proof::OtherKey,
        Proof::Replayed,
        Proof::Two,
    ]);
    let payload = prop::sample::select(vec![
        Payload::List,
        Payload::Empty,
        Payload::AllowedCall,
        Payload::DeniedCall,
        Payload::List,
        Payload::BatchListAndDelete,
        Payload::Malformed,
        Payload::Oversize,
    ]);
    (
        (
            (
                prop::bool::weighted(0.15),
                prop::bool::weighted(0.85),
                method,
                path,
                prop::bool::weighted(0.2),
            ),
            (content_type, token, payload, proof),
        ),
        (
            chunking(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(any::<bool>()),
            any::<bool>(),
            any::<u8>(),
        ),
    )
        .prop_map(
            |(
                (
                    (audit, filter_lists, method, path, preflight_headers),
                    (content_type, token, payload, proof),
                ),
                (chunks, trailers, b_fetched, b_after_wait, refetch_granted, settle_at),
            )| Request {
                two_servers: false,
                target: match path {
                    "/healthz" => Target::Public,
                    p if p.starts_with("/.well-known/") => Target::Metadata,
                    _ => Target::Endpoint('-'),
                },
                audience_b: false,
                warm: false,
                proof,
                audit: audit && path != "/healthz",
                filter_lists,
                method,
                path,
                preflight_headers,
                content_type,
                token,
                payload,
                chunks,
                trailers,
                b_fetched,
                b_after_wait,
                refetch_granted,
                settle_at,
            },
        )
}

/// Requests to two servers behind one filter: any path of
/// [`TWO_SERVER_PATHS`], tokens for either server.
fn routed_request() -> impl Strategy<Value = Request> {
    (
        request(),
        prop::sample::select(TWO_SERVER_PATHS.to_vec()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mut r, (path, target), audience_b, warm)| {
            r.two_servers = true;
            r.warm = warm;
            r.path = path;
            r.target = target;
            r.audience_b = audience_b;
            r.audit = r.audit && target != Target::Public;
            r
        })
}

/// The audience of the scenario's tokens.
fn audience(r: &Request) -> &'static str {
    match (r.two_servers, r.audience_b) {
        (false, _) => RESOURCE,
        (true, false) => RESOURCE_A,
        (true, true) => RESOURCE_B,
    }
}

fn call(id: u64, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name}})
}

fn body_of(payload: Payload) -> Vec<u8> {
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    match payload {
        Payload::Empty => Vec::new(),
        Payload::AllowedCall => call(1, "get_weather").to_string().into_bytes(),
        Payload::DeniedCall => call(1, FORBIDDEN).to_string().into_bytes(),
        Payload::List => list.to_string().into_bytes(),
        Payload::BatchListAndDelete => json!([list, call(2, FORBIDDEN)]).to_string().into_bytes(),
        Payload::Malformed => b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\"".to_vec(),
        Payload::Oversize => {
            let mut big = call(1, "get_weather");
            big["params"]["arguments"] = json!({"pad": "x".repeat(MAX_BODY)});
            big.to_string().into_bytes()
        }
    }
}

fn token_text(token: Token) -> Option<String> {
    let k = keys();
    match token {
        Token::None => None,
        Token::ReaderA => Some(sign(&k.a, A, &["reader"], Some("at+jwt"))),
        Token::AdminA => Some(sign(&k.a, A, &["admin"], None)),
        Token::ForgedA => Some(sign(&k.forger, A, &["admin"], None)),
        Token::LogoutA => Some(sign(&k.a, A, &["admin"], Some("logout+jwt"))),
        Token::ReaderB => Some(sign(&k.b1, B, &["reader"], None)),
        Token::NewKidB => Some(sign(&k.b2, B, &["admin"], None)),
        Token::BoundA | Token::BoundAsBearer => {
            let jkt = client_jkt(&client_key());
            Some(sign_bound(&k.a, A, &["admin"], None, Some(&jkt)))
        }
    }
}

// ---------------------------------------------------------------------------
// DPoP proofs, made here with p256 (the client's key) and RFC 7638 by hand

fn client_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).expect("scalar")
}

fn other_client_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x43; 32]).expect("scalar")
}

fn client_jwk(key: &p256::ecdsa::SigningKey) -> (String, String) {
    let point = key.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    (
        URL_SAFE_NO_PAD.encode(&bytes[1..33]),
        URL_SAFE_NO_PAD.encode(&bytes[33..65]),
    )
}

fn client_jkt(key: &p256::ecdsa::SigningKey) -> String {
    use sha2::Digest;
    let (x, y) = client_jwk(key);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

const JTI: &str = "proof-1";

fn proof_for(key: &p256::ecdsa::SigningKey, htm: &str, path: &str, token: &str) -> String {
    proof_with_jti(key, htm, path, token, JTI)
}

fn proof_with_jti(
    key: &p256::ecdsa::SigningKey,
    htm: &str,
    path: &str,
    token: &str,
    jti: &str,
) -> String {
    use p256::ecdsa::signature::Signer;
    use sha2::Digest;
    let (x, y) = client_jwk(key);
    let header = json!({"typ": "dpop+jwt", "alg": "ES256",
                        "jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}});
    let claims = json!({"jti": jti, "htm": htm, "htu": format!("https://mcp.example.com{path}"),
                        "iat": NOW, "ath": URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// The `DPoP` headers of a request (a client may send one with any token).
fn proofs_of(r: &Request, token: &str) -> Vec<String> {
    let valid = || proof_for(&client_key(), r.method, r.path, token);
    match r.proof {
        Proof::None => vec![],
        Proof::Valid | Proof::Replayed => vec![valid()],
        Proof::WrongMethod => vec![proof_for(&client_key(), "PATCH", r.path, token)],
        Proof::OtherKey => vec![proof_for(&other_client_key(), r.method, r.path, token)],
        Proof::Two => vec![valid(), valid()],
    }
}

/// The roles the token carries when it verifies, as the upstream must see
/// them; `None` when it cannot verify in this scenario.
fn verified_roles(r: &Request) -> Option<&'static str> {
    // With two servers, a token is good only at the server of its audience.
    let for_b = matches!(r.target, Target::Endpoint('b'));
    if r.two_servers && for_b != r.audience_b {
        return None;
    }
    match r.token {
        Token::ReaderA => Some("reader"),
        Token::AdminA => Some("admin"),
        Token::None | Token::ForgedA | Token::LogoutA => None,
        Token::ReaderB => (r.b_fetched || r.b_after_wait.is_some()).then_some("reader"),
        // Only a granted refetch brings `b2`.
        Token::NewKidB => (r.refetch_granted && r.b_after_wait == Some(true)).then_some("admin"),
        // Only with the DPoP scheme and a proof good for this request.
        Token::BoundA => (r.proof == Proof::Valid).then_some("admin"),
        Token::BoundAsBearer => None,
    }
}

/// Whether the request must reach the upstream, decided from the scenario
/// alone (the oracle; it does not call the filter's code).
fn must_forward(r: &Request) -> bool {
    let body = body_of(r.payload);
    let has_body = !body.is_empty() || r.trailers;
    match r.target {
        // Refused (or answered) whatever the server's mode: no server's.
        Target::Metadata | Target::NoServer | Target::Ambiguous => return false,
        Target::Public => return true,
        Target::Endpoint(_) => {}
    }
    let upper = r.method.to_ascii_uppercase();
    if upper == "OPTIONS" && r.preflight_headers && !has_body {
        return true;
    }
    if r.audit {
        return true;
    }
    if verified_roles(r).is_none() {
        return false;
    }
    match upper.as_str() {
        "GET" | "DELETE" => body.is_empty(),
        "POST" => {
            let json =
                r.content_type.len() == 1 && r.content_type[0].starts_with("application/json");
            json && match r.payload {
                Payload::AllowedCall | Payload::List => true,
                Payload::DeniedCall | Payload::BatchListAndDelete => false,
                Payload::Empty | Payload::Malformed | Payload::Oversize => false,
            }
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// A model of Envoy around the machine

struct FakeHost {
    request_body: Vec<u8>,
    response_buffer: Vec<u8>,
    fetch_asked: bool,
    refetch_granted: bool,
    refetch_asked: bool,
    /// The proxy's shared data (the DPoP replay memory, the authorization
    /// server's answers).
    shared: SharedMap,
    /// Calls to the authorization server this worker has under way.
    in_flight: usize,
}

impl Host for FakeHost {
    fn shared_data(&mut self) -> &mut dyn SharedData {
        &mut self.shared
    }
    fn calls_in_flight(&self) -> usize {
        self.in_flight
    }
    fn digest_key(&self) -> [u8; 32] {
        [9; 32]
    }
    fn request_body(&self, len: usize) -> Vec<u8> {
        self.request_body[..len.min(self.request_body.len())].to_vec()
    }
    fn response_body(&self, len: usize) -> Vec<u8> {
        self.response_buffer[..len.min(self.response_buffer.len())].to_vec()
    }
    fn fetch_keys(&mut self, _provider: usize) {
        self.fetch_asked = true;
    }
    fn refetch_keys(&mut self, _provider: usize) -> bool {
        self.refetch_asked = true;
        self.refetch_granted
    }
    fn tool_headers(&self, _tool: &str) -> Option<Vec<ParamHeader>> {
        None
    }
}

/// What the upstream and the client saw.
#[derive(Default, Debug)]
struct World {
    /// The request went upstream, with these headers.
    forwarded: Option<Vec<(String, String)>>,
    /// The whole request had arrived when it went upstream.
    forwarded_after_end: bool,
    answered: Option<u32>,
    awaiting_keys: bool,
    /// Request headers as they stand (edits applied).
    headers: Vec<(String, String)>,
    /// Request trailers as they stand (removals applied).
    trailers: Vec<String>,
    /// Calls to the authorization server the filter asked for, in order.
    calls: Vec<Call>,
    /// The request waits for another request's call.
    call_wait: bool,
}

fn apply_request_effects(world: &mut World, output: &Output) {
    for effect in &output.effects {
        match effect {
            Effect::SendAnswer(answer) => {
                assert!(world.answered.is_none(), "answered twice");
                world.answered = Some(answer.status);
            }
            Effect::EditRequestHeaders(edits) => {
                assert!(
                    world.forwarded.is_none(),
                    "headers edited after they went upstream"
                );
                world.headers.retain(|(n, _)| !edits.remove.contains(n));
                world.headers.extend(edits.set.iter().cloned());
            }
            Effect::AwaitKeys { .. } => world.awaiting_keys = true,
            Effect::RemoveRequestTrailers(names) => world.trailers.retain(|t| !names.contains(t)),
            Effect::ReplaceResponseBody { .. }
            | Effect::SetResponseHeader { .. }
            | Effect::RemoveResponseTrailers(_)
            | Effect::LearnToolHeaders(_) => {
                panic!("a response effect on the request side: {effect:?}")
            }
            Effect::Publish(_) | Effect::Count(..) | Effect::Log(..) => {}
            Effect::CallAuthorizationServer(call) => {
                assert!(
                    world.forwarded.is_none(),
                    "a call after the request went on"
                );
                world.calls.push(call.clone());
            }
            Effect::AwaitAuthorizationServer => world.call_wait = true,
        }
    }
}

fn after_request_callback(world: &mut World, output: &Output, ended: bool) {
    apply_request_effects(world, output);
    if output.action == Action::Continue && world.forwarded.is_none() {
        assert!(world.answered.is_none(), "forwarded after a local answer");
        world.forwarded = Some(world.headers.clone());
        world.forwarded_after_end = ended;
    }
}

struct Run {
    exchange: Exchange,
    host: FakeHost,
    ring: KeyRing,
    cache: VerifiedTokenCache,
    gateway: Gateway,
}

impl Run {
    fn event(&mut self, f: impl FnOnce(&mut Exchange, &mut Env) -> Output) -> Output {
        let mut env = Env {
            gateway: &self.gateway,
            keys: &self.ring,
            cache: &mut self.cache,
            now_ms: NOW * 1000,
            host: &mut self.host,
        };
        f(&mut self.exchange, &mut env)
    }
}

/// An allowed call with `token` at `path`, through its own exchange but the
/// same keys and verified-token cache, before the scenario's request.
fn warm_up(run: &mut Run, token: &str, path: &str) {
    let body = call(9, "get_weather").to_string().into_bytes();
    let saved = std::mem::replace(&mut run.host.request_body, body.clone());
    let head = RequestHead::new(
        "POST",
        path,
        vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {token}")),
        ],
    );
    let mut exchange = Exchange::new();
    let mut env = Env {
        gateway: &run.gateway,
        keys: &run.ring,
        cache: &mut run.cache,
        now_ms: NOW * 1000,
        host: &mut run.host,
    };
    exchange.on_request_headers(&mut env, head, false);
    exchange.on_request_body(&mut env, body.len(), true);
    run.host.request_body = saved;
}

/// How a body (a request's or an answer's) is cut into the chunks Envoy
/// hands over.
#[derive(Debug, Clone)]
enum Chunking {
    /// At these fractions (of 256) of its length: a few chunks.
    Fractions(Vec<u8>),
    /// Into chunks of these sizes, over and over: many chunks, down to one
    /// byte each.
    Sizes(Vec<usize>),
}

fn chunking() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..4).prop_map(Chunking::Fractions),
        1 => Just(Chunking::Sizes(vec![1])),
        2 => prop::collection::vec(1usize..=48, 1..6).prop_map(Chunking::Sizes),
    ]
}

/// Where the chunks of a body of `len` bytes end (the last at `len`).
fn cut_points(len: usize, chunking: &Chunking) -> Vec<usize> {
    let mut points: Vec<usize> = match chunking {
        Chunking::Fractions(cuts) => cuts.iter().map(|c| (*c as usize * len) / 256).collect(),
        Chunking::Sizes(sizes) => sizes
            .iter()
            .cycle()
            .scan(0, |at, size| {
                *at += size;
                (*at < len).then_some(*at)
            })
            .collect(),
    };
    points.push(len);
    points.sort_unstable();
    points.dedup();
    points.retain(|p| *p > 0);
    points
}

/// The event after which something happens (`at` spread over the
/// `n_events` events and the time after them).
fn moment(at: u8, n_events: usize) -> usize {
    at as usize * (n_events + 1) / 256
}

/// Drives the request; returns the world and the run (for the answer).
fn drive_request(r: &Request) -> (World, Run) {
    let k = keys();
    AUDIENCE.with(|a| a.set(audience(r)));
    let body = body_of(r.payload);
    let mut headers: Vec<(String, String)> = r
        .content_type
        .iter()
        .map(|t| ("content-type".to_string(), t.to_string()))
        .collect();
    // One token for the whole scenario (signatures are randomised).
    let token = token_text(r.token);
    if let Some(token) = &token {
        let scheme = if r.token == Token::BoundA {
            "DPoP"
        } else {
            "Bearer"
        };
        headers.push(("authorization".into(), format!("{scheme} {token}")));
        for proof in proofs_of(r, token) {
            headers.push(("dpop".into(), proof));
        }
    }
    if r.preflight_headers {
        headers.push(("origin".into(), "https://app.example".into()));
        headers.push(("access-control-request-method".into(), "POST".into()));
    }
    // Spoofed identity headers in several spellings.
    headers.push(("x-mcp-roles".into(), "admin".into()));
    headers.push(("x_mcp_roles".into(), "admin".into()));
    headers.push(("X-Mcp_Roles".into(), "admin".into()));
    headers.push(("accept-encoding".into(), "gzip".into()));
    // A client's own copy of the published call, to move a rate-limit
    // counter to another tool's bucket.
    headers.push(("x-mcp-tool".into(), "cheap_tool".into()));
    headers.push(("X_Mcp_Tool".into(), "cheap_tool".into()));

    let gateway = if r.two_servers {
        two_servers(r.audit, r.filter_lists)
    } else {
        Gateway::single(policy(r.audit, r.filter_lists))
    };
    let mut ring = KeyRing {
        sets: vec![
            Some(key_set(vec![jwk(&k.a, "a1")])),
            r.b_fetched.then(|| key_set(vec![jwk(&k.b1, "b1")])),
        ],
        generations: vec![1, u64::from(r.b_fetched)],
    };
    if matches!(r.token, Token::NewKidB) && !r.b_fetched {
        // A new kid of a provider never fetched is a pending fetch first.
        ring.sets[1] = None;
    }
    let mut run = Run {
        exchange: Exchange::new(),
        host: FakeHost {
            request_body: body.clone(),
            response_buffer: Vec::new(),
            fetch_asked: false,
            refetch_granted: r.refetch_granted,
            refetch_asked: false,
            shared: {
                let mut shared = SharedMap::default();
                replay::prepare(&mut shared, [1; 32]);
                if r.proof == Proof::Replayed {
                    // The proxy took this very proof before.
                    let jkt = client_jkt(&client_key());
                    replay::remember(&mut shared, &jkt, JTI, NOW + 301, NOW);
                }
                shared
            },
            in_flight: 0,
        },
        ring,
        cache: VerifiedTokenCache::new(8),
        gateway,
    };
    if r.warm && !matches!(r.token, Token::BoundA | Token::BoundAsBearer) {
        if let Some(token) = &token {
            warm_up(
                &mut run,
                token,
                if r.audience_b { "/b/mcp" } else { "/a/mcp" },
            );
        }
    }
    let mut world = World {
        headers: headers.clone(),
        trailers: REQUEST_TRAILERS.iter().map(|t| t.to_string()).collect(),
        ..World::default()
    };

    let head = RequestHead::new(r.method, &format!("{}?q=1", r.path), headers);
    let eos_at_headers = body.is_empty() && !r.trailers;
    let points = cut_points(body.len(), &r.chunks);
    // Events: headers, chunks..., trailers?; the key wait may end after any.
    let n_events = 1 + points.len() + usize::from(r.trailers);
    let settle_after = moment(r.settle_at, n_events);
    // Each wait ends once; a request may wait twice (a first fetch, then
    // a refetch for a kid the fetch did not bring).
    let settle = |run: &mut Run, world: &mut World, ended: bool| {
        if !world.awaiting_keys {
            return;
        }
        world.awaiting_keys = false;
        if let Some(with_b2) = r.b_after_wait {
            let mut jwks = vec![jwk(&k.b1, "b1")];
            if with_b2 && run.host.refetch_asked {
                jwks.push(jwk(&k.b2, "b2"));
            }
            run.ring.sets[1] = Some(key_set(jwks));
            run.ring.generations[1] += 1;
        }
        let output = run.event(|ex, env| ex.on_keys_settled(env));
        after_request_callback(world, &output, ended);
    };

    let output = run.event(|ex, env| ex.on_request_headers(env, head, eos_at_headers));
    after_request_callback(&mut world, &output, eos_at_headers);
    let mut event = 1;
    if settle_after == 0 {
        settle(&mut run, &mut world, eos_at_headers);
    }
    if !eos_at_headers {
        for (i, &point) in points.iter().enumerate() {
            let last = i + 1 == points.len() && !r.trailers;
            let output = run.event(|ex, env| ex.on_request_body(env, point, last));
            after_request_callback(&mut world, &output, last);
            if settle_after == event {
                settle(&mut run, &mut world, last);
            }
            event += 1;
        }
        if r.trailers {
            let names = world.trailers.clone();
            let output = run.event(|ex, env| ex.on_request_trailers(env, &names));
            after_request_callback(&mut world, &output, true);
        }
    }
    // The wait ends some time after the stream did, if not before.
    for _ in 0..3 {
        settle(&mut run, &mut world, true);
    }
    (world, run)
}

/// Trailers a client sends along: a token, identity and routing headers.
const REQUEST_TRAILERS: &[&str] = &["x-foo", "authorization", "x_mcp_roles", "mcp-name", "dpop"];

fn check_request(r: &Request, world: &World) {
    let forwarded = world.forwarded.is_some();
    assert!(
        forwarded != world.answered.is_some(),
        "forwarded {forwarded}, answered {:?}",
        world.answered
    );
    assert_eq!(
        forwarded,
        must_forward(r),
        "forwarded? answered {:?}",
        world.answered
    );
    let Some(headers) = &world.forwarded else {
        return;
    };
    if !r.audit && r.target != Target::Public && verified_roles(r).is_some() {
        assert!(
            world.forwarded_after_end,
            "went upstream before the body ended"
        );
    }
    if r.trailers {
        // With trailers there is a body, so no request is a preflight:
        // every path but the public one is the MCP endpoint.
        let endpoint = r.target != Target::Public;
        if endpoint {
            assert!(
                world.trailers.is_empty(),
                "trailers went to the MCP endpoint: {:?}",
                world.trailers
            );
        }
        for name in &world.trailers {
            let folded = name.replace('_', "-");
            assert!(
                folded != "authorization" && folded != "x-mcp-roles" && folded != "dpop",
                "{name} went upstream in trailers"
            );
        }
    }
    for (name, value) in headers {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        assert_ne!(folded, "authorization", "the token went upstream");
        assert_ne!(folded, "dpop", "a DPoP proof went upstream");
        if folded == "x-mcp-roles" {
            assert_eq!(name, "x-mcp-roles", "a client spelling went upstream");
            assert_eq!(Some(value.as_str()), verified_roles(r), "roles upstream");
        }
        if folded == "x-mcp-tool" && r.two_servers {
            // Only the filter's own, with the name the rules decided on.
            assert_eq!(name, "x-mcp-tool", "a client spelling went upstream");
            let called = match r.payload {
                Payload::AllowedCall => Some("get_weather"),
                Payload::DeniedCall => Some(FORBIDDEN),
                _ => None,
            };
            assert_eq!(Some(value.as_str()), called, "x-mcp-tool upstream");
        }
    }
    let endpoint = matches!(r.target, Target::Endpoint(_));
    if r.two_servers && endpoint && r.payload == Payload::AllowedCall && verified_roles(r).is_some()
    {
        let published = headers.iter().any(|(n, _)| n == "x-mcp-tool");
        let json = r.content_type.len() == 1 && r.content_type[0].starts_with("application/json");
        assert_eq!(
            published,
            r.method.eq_ignore_ascii_case("POST") && json,
            "the call is published on an allowed call"
        );
    }
}

// ---------------------------------------------------------------------------
// Answers

#[derive(Debug, Clone, Copy, PartialEq)]
enum Media {
    Json,
    Sse,
    None,
    Plain,
    JsonRpc,
    TwoJson,
}

/// How the upstream encodes its answer: the `Content-Encoding` headers it
/// sends, and what its bytes really are.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    /// No `Content-Encoding`.
    Plain,
    /// `Content-Encoding: identity`: plain bytes, readable.
    Identity,
    Gzip,
    /// `GZIP`: codings are case-insensitive.
    GzipUpper,
    XGzip,
    /// zlib, as HTTP's `deflate` is.
    Deflate,
    /// `identity, gzip`: gzip bytes under a list.
    IdentityThenGzip,
    /// Two headers, `identity` then `gzip`.
    TwoHeaders,
}

impl Encoding {
    fn headers(self) -> &'static [&'static str] {
        match self {
            Encoding::Plain => &[],
            Encoding::Identity => &["identity"],
            Encoding::Gzip => &["gzip"],
            Encoding::GzipUpper => &["GZIP"],
            Encoding::XGzip => &["x-gzip"],
            Encoding::Deflate => &["deflate"],
            Encoding::IdentityThenGzip => &["identity, gzip"],
            Encoding::TwoHeaders => &["identity", "gzip"],
        }
    }

    /// The bytes are compressed (the filter cannot read them).
    fn compresses(self) -> bool {
        !matches!(self, Encoding::Plain | Encoding::Identity)
    }
}

/// What follows the answer's headers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    /// The answer's bytes, in chunks.
    Full,
    /// Nothing: the headers end the stream, or only trailers follow.
    None,
    /// One empty chunk (HTTP/2 lets an upstream end a stream so).
    EmptyChunk,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u32,
    media: Media,
    encoding: Encoding,
    id: Value,
    body: Body,
    chunks: Chunking,
    trailers: bool,
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop::sample::select(vec![200u32, 200, 200, 404, 500]),
        prop::sample::select(vec![
            Media::Json,
            Media::Json,
            Media::Sse,
            Media::Sse,
            Media::None,
            Media::Plain,
            Media::JsonRpc,
            Media::TwoJson,
        ]),
        prop_oneof![
            8 => Just(Encoding::Plain),
            1 => Just(Encoding::Identity),
            1 => Just(Encoding::Gzip),
            1 => Just(Encoding::GzipUpper),
            1 => Just(Encoding::XGzip),
            1 => Just(Encoding::Deflate),
            1 => Just(Encoding::IdentityThenGzip),
            1 => Just(Encoding::TwoHeaders),
        ],
        prop::sample::select(vec![json!(1), json!("1"), json!(1.0), json!(77)]),
        prop_oneof![8 => Just(Body::Full), 1 => Just(Body::None), 1 => Just(Body::EmptyChunk)],
        chunking(),
        any::<bool>(),
    )
        .prop_map(
            |(status, media, encoding, id, body, chunks, trailers)| Answer {
                status,
                media,
                encoding,
                id,
                body,
                chunks,
                trailers,
            },
        )
}

fn list_answer(id: &Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "tools": [{"name": "get_weather"}, {"name": FORBIDDEN}],
        "cacheScope": "public"}})
    .to_string()
}

/// The answer's plain text.
fn answer_text(a: &Answer) -> Vec<u8> {
    let list = list_answer(&a.id);
    match a.media {
        Media::Sse => format!(
            ": priming\n\nid: e1\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{}}}}\n\nid: e2\nevent: message\ndata: {list}\n\n"
        ),
        _ => list,
    }
    .into_bytes()
}

/// The bytes the upstream sends: the text, compressed as its headers say.
fn answer_bytes(a: &Answer) -> Vec<u8> {
    if a.body != Body::Full {
        return Vec::new();
    }
    let text = answer_text(a);
    match a.encoding {
        Encoding::Plain | Encoding::Identity => text,
        Encoding::Deflate => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&text).expect("deflate");
            z.finish().expect("deflate")
        }
        _ => {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&text).expect("gzip");
            z.finish().expect("gzip")
        }
    }
}

/// What a client makes of a body under these `Content-Encoding` headers:
/// the plain bytes, or `None` when they do not decode as the headers say.
fn decoded(body: &[u8], encodings: &[&str]) -> Option<Vec<u8>> {
    let codings: Vec<String> = encodings
        .iter()
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if body.is_empty() {
        // No content: nothing to decode, whatever the headers say.
        return Some(Vec::new());
    }
    let mut bytes = body.to_vec();
    // The last coding applied is the first to undo.
    for coding in codings.iter().rev() {
        let mut out = Vec::new();
        let read = match coding.as_str() {
            "gzip" | "x-gzip" => flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out),
            "deflate" => flate2::read::ZlibDecoder::new(&bytes[..]).read_to_end(&mut out),
            _ => return None,
        };
        read.ok()?;
        bytes = out;
    }
    Some(bytes)
}

fn answer_headers(a: &Answer) -> Vec<(String, String)> {
    let mut headers = vec![(":status".to_string(), a.status.to_string())];
    let types: &[&str] = match a.media {
        Media::Json => &["application/json"],
        Media::Sse => &["text/event-stream"],
        Media::None => &[],
        Media::Plain => &["text/plain"],
        Media::JsonRpc => &["application/json-rpc"],
        Media::TwoJson => &["application/json", "application/json"],
    };
    for t in types {
        headers.push(("content-type".into(), t.to_string()));
    }
    for e in a.encoding.headers() {
        headers.push(("content-encoding".into(), e.to_string()));
    }
    headers
}

/// What the client got.
#[derive(Default, Debug)]
struct Client {
    headers: Option<Vec<(String, String)>>,
    body: Vec<u8>,
    /// The upstream's response trailers were removed.
    trailers_removed: bool,
}

/// Envoy's side of an answer, as the filter's effects change it.
#[derive(Default)]
struct Held {
    /// The headers as Envoy holds them, until they go out to the client.
    headers: Vec<(String, String)>,
    /// Body bytes Envoy holds.
    body: Vec<u8>,
    /// A body callback came: Envoy has a body buffer the filter may
    /// rewrite. (With none, Envoy ignores a rewrite.)
    body_seen: bool,
}

fn drive_answer(run: &mut Run, a: &Answer) -> Client {
    let bytes = answer_bytes(a);
    let mut held = Held {
        headers: answer_headers(a),
        ..Held::default()
    };
    let mut client = Client::default();
    let step = |out: Output, held: &mut Held, client: &mut Client| {
        for effect in &out.effects {
            match effect {
                Effect::SetResponseHeader { name, value } => {
                    assert!(
                        client.headers.is_none(),
                        "header {name} set after the headers went out"
                    );
                    held.headers.retain(|(n, _)| n != name);
                    if let Some(v) = value {
                        held.headers.push((name.clone(), v.clone()));
                    }
                }
                Effect::ReplaceResponseBody { len, bytes } => {
                    assert!(
                        held.body_seen,
                        "a body rewritten where Envoy has none (it would ignore it)"
                    );
                    assert!(*len <= held.body.len(), "replaced more than is held");
                    let rest = held.body.split_off(*len);
                    held.body = bytes.clone();
                    held.body.extend(rest);
                }
                Effect::Count(..)
                | Effect::Log(..)
                | Effect::RemoveResponseTrailers(_)
                | Effect::LearnToolHeaders(_) => {}
                other => panic!("a request effect on the response side: {other:?}"),
            }
        }
        if out.action == Action::Continue {
            if client.headers.is_none() {
                client.headers = Some(held.headers.clone());
            }
            client.body.append(&mut held.body);
        }
    };
    let head = ResponseHead::from_headers(&held.headers);
    let ends_at_headers = a.body == Body::None && !a.trailers;
    let out = run.event(|ex, env| ex.on_response_headers(env, || head, ends_at_headers));
    step(out, &mut held, &mut client);
    if ends_at_headers {
        assert!(
            client.headers.is_some(),
            "headers of a bodiless answer held"
        );
        return client;
    }
    let points = match a.body {
        Body::Full => cut_points(bytes.len(), &a.chunks),
        Body::EmptyChunk => vec![0],
        Body::None => Vec::new(),
    };
    let mut start = 0;
    for (i, &point) in points.iter().enumerate() {
        let last = i + 1 == points.len() && !a.trailers;
        held.body.extend_from_slice(&bytes[start..point]);
        held.body_seen = true;
        start = point;
        run.host.response_buffer = held.body.clone();
        let len = held.body.len();
        let out = run.event(|ex, env| ex.on_response_body(env, len, last));
        step(out, &mut held, &mut client);
    }
    if a.trailers {
        run.host.response_buffer = held.body.clone();
        let names = vec!["x-upstream-trailer".to_string()];
        let out = run.event(|ex, env| ex.on_response_trailers(env, &names));
        client.trailers_removed = out
            .effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveResponseTrailers(n) if n == &names));
        assert_eq!(out.action, Action::Continue, "trailers held for ever");
        step(out, &mut held, &mut client);
    }
    assert!(held.body.is_empty(), "bytes left held at the end");
    assert!(client.headers.is_some(), "headers never went out");
    client
}

fn watched(r: &Request) -> bool {
    let upper = r.method.to_ascii_uppercase();
    !r.audit
        && r.filter_lists
        && must_forward(r)
        && r.target != Target::Public
        && upper != "OPTIONS"
        && match upper.as_str() {
            "GET" | "DELETE" => true,
            "POST" => matches!(r.payload, Payload::List),
            _ => false,
        }
}

fn check_answer(r: &Request, a: &Answer, client: &Client) {
    let headers = client.headers.as_ref().expect("headers went out");
    let header = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    if !watched(r) {
        assert_eq!(
            client.body,
            answer_bytes(a),
            "an answer needing no filter was changed"
        );
        return;
    }
    // Headers that match the body: its length, and an encoding it has.
    for length in header("content-length") {
        assert_eq!(length, client.body.len().to_string(), "content-length");
    }
    let plain = decoded(&client.body, &header("content-encoding"))
        .expect("the body does not decode as its content-encoding says");
    let text = String::from_utf8_lossy(&plain);
    assert!(
        !text.contains(FORBIDDEN),
        "a forbidden tool reached the client: {text}"
    );
    if a.body == Body::None {
        // Envoy has no body to rewrite: the headers must say so.
        assert!(
            client.body.is_empty(),
            "a body made up for a bodiless answer"
        );
        return;
    }
    if a.body == Body::EmptyChunk && !text.contains("-32005") {
        // An empty body passes, or the error replaces it (checked below).
        assert!(client.body.is_empty(), "a body made up for an empty answer");
        return;
    }
    let compressed = a.encoding.compresses();
    if text.contains("-32005") {
        if a.trailers && (a.media != Media::Sse || compressed) {
            assert!(
                client.trailers_removed,
                "the upstream's trailers went with the error"
            );
        }
        if a.media != Media::Sse || compressed {
            assert_eq!(header("content-type"), vec!["application/json"]);
            assert!(
                header("content-encoding").is_empty(),
                "stale content-encoding"
            );
            assert_eq!(
                header("content-length"),
                vec![client.body.len().to_string()]
            );
        }
    } else {
        assert!(!compressed, "compressed bytes passed");
        assert!(
            matches!(a.media, Media::Json | Media::Sse),
            "unreadable media passed"
        );
    }
    if a.media == Media::Json && !compressed {
        let value: Value = serde_json::from_slice(&client.body).expect("JSON to the client");
        if value.get("result").is_some() {
            assert_eq!(value["result"]["tools"], json!([{"name": "get_weather"}]));
            assert_eq!(value["result"]["cacheScope"], "private");
            assert_eq!(
                header("content-length"),
                vec![client.body.len().to_string()]
            );
        }
    }
    if a.media == Media::Sse && !compressed && !text.contains("-32005") {
        assert!(text.contains("\"cacheScope\":\"private\""), "{text}");
        assert!(text.contains("get_weather"), "{text}");
    }
}

/// Requests whose answers must be filtered: a list POST, a GET stream, a
/// DELETE, by callers whose keys are there or come during the wait.
fn watched_request() -> impl Strategy<Value = Request> {
    request().prop_map(|mut r| {
        r.audit = false;
        r.filter_lists = true;
        r.path = "/mcp";
        r.target = Target::Endpoint('-');
        r.preflight_headers = false;
        r.content_type = &["application/json"];
        r.token = if r.b_after_wait.is_some() {
            Token::ReaderB
        } else {
            Token::AdminA
        };
        let (method, payload) = match r.settle_at % 3 {
            0 => ("POST", Payload::List),
            1 => ("GET", Payload::Empty),
            _ => ("delete", Payload::Empty),
        };
        r.method = method;
        r.payload = payload;
        r
    })
}

// ---------------------------------------------------------------------------
// Calls to the authorization server: introspection before the body is read,
// token exchange after the verdict

/// The caller's token, in the scenarios with an authorization server.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    /// Provider A's JWT (verified locally, never introspected).
    Jwt,
    /// An opaque token, introspected.
    Opaque,
    /// An opaque token bound to the client's key, with the `DPoP` scheme
    /// and a fresh proof: introspected, then its proof checked.
    OpaqueDpop,
    /// The same bound token sent as a bearer token (a fresh proof
    /// alongside): the downgrade.
    OpaqueDpopAsBearer,
    /// The same bound token with the `DPoP` scheme and a proof by another
    /// key.
    OpaqueDpopOtherKey,
    /// An opaque token bound to no key, with the `DPoP` scheme and a
    /// proof.
    OpaqueUnboundAsDpop,
    None,
}

impl Caller {
    /// The token is opaque: it goes to introspection.
    fn opaque(self) -> bool {
        !matches!(self, Caller::Jwt | Caller::None)
    }

    /// Introspection answers it bound to the client's key.
    fn bound(self) -> bool {
        matches!(
            self,
            Caller::OpaqueDpop | Caller::OpaqueDpopAsBearer | Caller::OpaqueDpopOtherKey
        )
    }

    /// It comes with the `DPoP` scheme (else `Bearer`).
    fn dpop_scheme(self) -> bool {
        matches!(
            self,
            Caller::OpaqueDpop | Caller::OpaqueDpopOtherKey | Caller::OpaqueUnboundAsDpop
        )
    }
}

/// What introspection answers (or how it fails).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Introspected {
    Active,
    Inactive,
    WrongAudience,
    /// `"active": "true"`.
    ActiveAsString,
    Garbage,
    /// The call fails (unreachable, timed out, reset).
    NoAnswer,
}

/// What the exchange answers (or how it fails).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Exchanged {
    Issued,
    /// A JWT for the MCP server itself, not the upstream's audience.
    WrongAudience,
    Refused,
    ServerError,
    Garbage,
    NoAnswer,
}

#[derive(Debug, Clone)]
struct CallScenario {
    method: &'static str,
    caller: Caller,
    payload: Payload,
    chunks: Chunking,
    trailers: bool,
    introspected: Introspected,
    /// Where introspection's answer falls among the request's events
    /// (past the last: after the stream ended).
    answer_at: u8,
    exchange: Option<Exchanged>,
    /// The provider's `dpop` is `required` (else `allowed`).
    dpop_required: bool,
    /// Shared data has its slots (as in Envoy), so answers are kept.
    shared_slots: bool,
    /// The same request again, after the first one's verdict.
    again: bool,
}

fn call_scenario() -> impl Strategy<Value = CallScenario> {
    (
        (
            prop::sample::select(vec!["POST", "POST", "POST", "GET", "DELETE"]),
            prop::sample::select(vec![
                Caller::Opaque,
                Caller::Opaque,
                Caller::OpaqueDpop,
                Caller::OpaqueDpop,
                Caller::OpaqueDpopAsBearer,
                Caller::OpaqueDpopOtherKey,
                Caller::OpaqueUnboundAsDpop,
                Caller::Jwt,
                Caller::None,
            ]),
            prop::sample::select(vec![
                Payload::List,
                Payload::AllowedCall,
                Payload::DeniedCall,
                Payload::Malformed,
                Payload::Oversize,
                Payload::Empty,
            ]),
            chunking(),
            any::<bool>(),
        ),
        (
            prop::sample::select(vec![
                Introspected::Active,
                Introspected::Active,
                Introspected::Inactive,
                Introspected::WrongAudience,
                Introspected::ActiveAsString,
                Introspected::Garbage,
                Introspected::NoAnswer,
            ]),
            any::<u8>(),
            prop::option::of(prop::sample::select(vec![
                Exchanged::Issued,
                Exchanged::Issued,
                Exchanged::WrongAudience,
                Exchanged::Refused,
                Exchanged::ServerError,
                Exchanged::Garbage,
                Exchanged::NoAnswer,
            ])),
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.3),
        ),
    )
        .prop_map(
            |(
                (method, caller, payload, chunks, trailers),
                (introspected, answer_at, exchange, shared_slots, again, dpop_required),
            )| CallScenario {
                method,
                caller,
                payload: if method == "POST" {
                    payload
                } else {
                    Payload::Empty
                },
                chunks,
                trailers,
                introspected,
                answer_at,
                exchange,
                dpop_required,
                shared_slots,
                again,
            },
        )
}

const OPAQUE: &str = "opaque-caller-token-7f3a";
const UPSTREAM_AUDIENCE: &str = "downstream-api";

fn call_policy(exchange: bool, dpop_required: bool) -> Policy {
    let mut config = json!({
        "resource": RESOURCE,
        "providers": [{
            "issuer": A, "jwks": {"inline": {"keys": [jwk(&keys().a, "a1")]}},
            "introspection": {"cluster": "idp", "url": "https://a.example/introspect",
                              "client_id": "gw", "client_secret": "gw-secret"},
            "dpop": if dpop_required { "required" } else { "allowed" }
        }],
        "rules": [
            {"name": "everyone lists", "effect": "allow", "methods": ["tools/list"]},
            {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"], "roles": ["reader"]},
            {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]}
        ],
        "identity_headers": {"x-mcp-roles": "$roles"},
        "max_body_bytes": MAX_BODY,
    });
    if exchange {
        config["upstream_token"] = json!({"cluster": "idp", "token_endpoint": "https://a.example/token",
            "client_id": "gw", "client_secret": "gw-secret", "audience": UPSTREAM_AUDIENCE});
    }
    Policy::from_value(&config).expect("test policy")
}

fn json_answer(status: u32, body: &str) -> Option<CallAnswer> {
    Some(CallAnswer {
        status,
        content_types: vec!["application/json".into()],
        content_encodings: Vec::new(),
        body: body.as_bytes().to_vec(),
    })
}

/// Introspection's answer; an active one `bound` to the client's key.
fn introspection_answer(i: Introspected, bound: bool) -> Option<CallAnswer> {
    let active = |aud: &str| {
        let mut claims = json!({"active": true, "iss": A, "aud": aud, "exp": NOW + 300,
                                "sub": "bob", "roles": ["reader"], "token_type": "Bearer"});
        if bound {
            claims["token_type"] = json!("DPoP");
            claims["cnf"] = json!({"jkt": client_jkt(&client_key())});
        }
        claims.to_string()
    };
    match i {
        Introspected::Active => json_answer(200, &active(RESOURCE)),
        Introspected::Inactive => json_answer(200, r#"{"active":false}"#),
        Introspected::WrongAudience => json_answer(200, &active("https://other.example")),
        Introspected::ActiveAsString => json_answer(
            200,
            &json!({"active": "true", "aud": RESOURCE, "exp": NOW + 300}).to_string(),
        ),
        Introspected::Garbage => json_answer(200, "<html>"),
        Introspected::NoAnswer => None,
    }
}

fn exchanged_token(aud: &str) -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2ln",
        part(json!({"alg": "RS256"})),
        part(json!({"iss": A, "aud": aud, "exp": NOW + 600}))
    )
}

fn exchange_answer(e: Exchanged) -> Option<CallAnswer> {
    let issued = |aud: &str| {
        json!({"access_token": exchanged_token(aud), "token_type": "Bearer", "expires_in": 300,
               "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
        .to_string()
    };
    match e {
        Exchanged::Issued => json_answer(200, &issued(UPSTREAM_AUDIENCE)),
        Exchanged::WrongAudience => json_answer(200, &issued(RESOURCE)),
        Exchanged::Refused => json_answer(400, r#"{"error":"invalid_grant"}"#),
        Exchanged::ServerError => json_answer(502, "{}"),
        Exchanged::Garbage => json_answer(200, "{\"access_token\":"),
        Exchanged::NoAnswer => None,
    }
}

/// Whether the caller's token is sent to introspection: an opaque token
/// whose scheme its provider takes (checked before any call).
fn introspects(c: &CallScenario) -> bool {
    c.caller.opaque() && (c.caller.dpop_scheme() || !c.dpop_required)
}

/// The oracle: whether the request reaches the upstream, from the
/// scenario alone. A bound token passes only with the `DPoP` scheme and a
/// proof by its key; an unbound one only as a bearer token, where bearer
/// tokens are taken.
fn call_must_forward(c: &CallScenario) -> bool {
    let identity = match c.caller {
        Caller::Jwt => !c.dpop_required,
        Caller::Opaque => !c.dpop_required && c.introspected == Introspected::Active,
        Caller::OpaqueDpop => c.introspected == Introspected::Active,
        Caller::OpaqueDpopAsBearer | Caller::OpaqueDpopOtherKey | Caller::OpaqueUnboundAsDpop => {
            false
        }
        Caller::None => false,
    };
    let has_body = !body_of(c.payload).is_empty() || c.trailers;
    let decided = identity
        && match c.method {
            "POST" => matches!(c.payload, Payload::List | Payload::AllowedCall),
            _ => !has_body || body_of(c.payload).is_empty(),
        };
    decided && c.exchange.is_none_or(|e| e == Exchanged::Issued)
}

fn purpose_of(call: &Call) -> Purpose {
    let path = call
        .headers
        .iter()
        .find(|(n, _)| n == ":path")
        .map(|(_, v)| v.as_str());
    if path == Some("/introspect") {
        Purpose::Introspection
    } else {
        Purpose::TokenExchange
    }
}

/// Drives one request of the scenario through the machine, answering the
/// calls it asks for when the scenario says; returns what the world saw.
/// `jti`: the request's DPoP proof's, where it has one.
fn drive_with_calls(c: &CallScenario, run: &mut Run, jti: &str) -> World {
    let body = body_of(c.payload);
    run.host.request_body = body.clone();
    run.exchange = Exchange::new();
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    match c.caller {
        Caller::Jwt => headers.push((
            "authorization".into(),
            format!("Bearer {}", sign(&keys().a, A, &["reader"], None)),
        )),
        Caller::Opaque => headers.push(("authorization".into(), format!("Bearer {OPAQUE}"))),
        caller @ (Caller::OpaqueDpop
        | Caller::OpaqueDpopAsBearer
        | Caller::OpaqueDpopOtherKey
        | Caller::OpaqueUnboundAsDpop) => {
            let scheme = if caller.dpop_scheme() {
                "DPoP"
            } else {
                "Bearer"
            };
            headers.push(("authorization".into(), format!("{scheme} {OPAQUE}")));
            let key = if caller == Caller::OpaqueDpopOtherKey {
                other_client_key()
            } else {
                client_key()
            };
            let proof = proof_with_jti(&key, c.method, "/mcp", OPAQUE, jti);
            headers.push(("dpop".into(), proof));
        }
        Caller::None => {}
    }
    headers.push(("X-MCP-Roles".into(), "admin".into()));
    let mut world = World {
        headers: headers.clone(),
        trailers: REQUEST_TRAILERS.iter().map(|t| t.to_string()).collect(),
        ..World::default()
    };
    let head = RequestHead::new(c.method, "/mcp", headers);
    let eos_at_headers = body.is_empty() && !c.trailers;
    let points = cut_points(body.len(), &c.chunks);
    let n_events = 1 + points.len() + usize::from(c.trailers);
    let answer_after = moment(c.answer_at, n_events);
    let mut answered = 0;
    // Answers the calls asked for so far (in order), once their moment came.
    let answer_calls = |run: &mut Run, world: &mut World, answered: &mut usize, ended: bool| {
        while *answered < world.calls.len() {
            let call = world.calls[*answered].clone();
            *answered += 1;
            let answer = match purpose_of(&call) {
                Purpose::Introspection => introspection_answer(c.introspected, c.caller.bound()),
                Purpose::TokenExchange => exchange_answer(c.exchange.unwrap_or(Exchanged::Issued)),
            };
            let body = String::from_utf8_lossy(&call.body).to_string();
            match purpose_of(&call) {
                Purpose::Introspection => {
                    assert!(body.contains(OPAQUE), "introspects the caller's token")
                }
                Purpose::TokenExchange => assert!(
                    body.contains("subject_token="),
                    "exchanges the caller's token"
                ),
            }
            let output = run.event(|ex, env| ex.on_authorization_server_answer(env, answer));
            after_request_callback(world, &output, ended);
        }
    };
    let output = run.event(|ex, env| ex.on_request_headers(env, head, eos_at_headers));
    after_request_callback(&mut world, &output, eos_at_headers);
    if answer_after == 0 {
        answer_calls(run, &mut world, &mut answered, eos_at_headers);
    }
    let mut event = 1;
    if !eos_at_headers {
        for (i, &point) in points.iter().enumerate() {
            let last = i + 1 == points.len() && !c.trailers;
            let output = run.event(|ex, env| ex.on_request_body(env, point, last));
            after_request_callback(&mut world, &output, last);
            if answer_after == event {
                answer_calls(run, &mut world, &mut answered, last);
            }
            event += 1;
        }
        if c.trailers {
            let names = world.trailers.clone();
            let output = run.event(|ex, env| ex.on_request_trailers(env, &names));
            after_request_callback(&mut world, &output, true);
        }
    }
    // Late answers (slow), and the exchange's, which follows the verdict.
    for _ in 0..3 {
        answer_calls(run, &mut world, &mut answered, true);
    }
    world
}

/// A refusal's status is `wanted`, or 413 when the body was over its limit
/// before the authorization server answered.
fn assert_refused_with(c: &CallScenario, status: u32, wanted: u32, what: &str) {
    let too_large_first = c.payload == Payload::Oversize && status == 413;
    assert!(
        status == wanted || too_large_first,
        "{what} is {wanted}, got {status}"
    );
}

fn check_with_calls(c: &CallScenario, world: &World, first: bool) {
    let forwarded = world.forwarded.is_some();
    assert!(
        forwarded != world.answered.is_some(),
        "forwarded {forwarded}, answered {:?}",
        world.answered
    );
    assert_eq!(
        forwarded,
        call_must_forward(c),
        "forwarded? answered {:?}",
        world.answered
    );
    assert!(
        !world.call_wait,
        "one request alone never waits for another's call"
    );
    let introspections = world
        .calls
        .iter()
        .filter(|call| purpose_of(call) == Purpose::Introspection)
        .count();
    // Every answer is kept a while (a failure for a second), so the same
    // request again makes no second call when shared data has its slots.
    let cached = !first && c.shared_slots;
    let expected = usize::from(introspects(c) && !cached);
    assert_eq!(introspections, expected, "introspection calls");
    if let Some(status) = world.answered {
        let refused_before_any_call =
            c.caller.opaque() && !introspects(c) || c.caller == Caller::Jwt && c.dpop_required;
        if refused_before_any_call {
            assert_eq!(status, 401, "a token refused for its scheme");
        }
        let misbound = matches!(
            c.caller,
            Caller::OpaqueDpopAsBearer | Caller::OpaqueDpopOtherKey | Caller::OpaqueUnboundAsDpop
        );
        if misbound && c.introspected == Introspected::Active {
            assert_refused_with(c, status, 401, "a token without its binding's proof");
        }
        if introspects(c)
            && matches!(
                c.introspected,
                Introspected::Garbage | Introspected::NoAnswer | Introspected::ActiveAsString
            )
        {
            assert_refused_with(c, status, 503, "an unusable introspection answer");
        }
    }
    let Some(headers) = &world.forwarded else {
        return;
    };
    assert!(
        world.forwarded_after_end,
        "went upstream before the body ended"
    );
    let authorization: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| {
            n.eq_ignore_ascii_case("authorization")
                || n.replace('_', "-").eq_ignore_ascii_case("authorization")
        })
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        !headers.iter().any(|(_, v)| v.contains(OPAQUE)
            || v.contains("eyJ") && !v.contains(&exchanged_token(UPSTREAM_AUDIENCE))),
        "the caller's token went upstream: {headers:?}"
    );
    assert!(
        !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("dpop")),
        "a DPoP proof went upstream: {headers:?}"
    );
    match c.exchange {
        Some(_) => assert_eq!(
            authorization,
            vec![format!("Bearer {}", exchanged_token(UPSTREAM_AUDIENCE)).as_str()],
            "the upstream gets the exchanged token, once"
        ),
        None => assert!(
            authorization.is_empty(),
            "no token upstream: {authorization:?}"
        ),
    }
    let roles: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().replace('_', "-") == "x-mcp-roles")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        roles,
        vec!["reader"],
        "the verified roles, never the client's"
    );
}

/// A run of requests to `policy` that may call the authorization server:
/// A's keys at hand, `in_flight` calls already under way on the worker, and
/// shared data with the tables for the answers when `shared_slots`.
fn call_run(policy: Policy, in_flight: usize, shared_slots: bool) -> Run {
    let mut host = FakeHost {
        shared: SharedMap::default(),
        request_body: Vec::new(),
        response_buffer: Vec::new(),
        fetch_asked: false,
        refetch_granted: false,
        refetch_asked: false,
        in_flight,
    };
    if shared_slots {
        shared::prepare(&mut host.shared, Purpose::Introspection);
        shared::prepare(&mut host.shared, Purpose::TokenExchange);
    }
    replay::prepare(&mut host.shared, [2; 32]);
    Run {
        exchange: Exchange::new(),
        host,
        ring: KeyRing {
            sets: vec![Some(key_set(vec![jwk(&keys().a, "a1")]))],
            generations: vec![1],
        },
        cache: VerifiedTokenCache::new(8),
        gateway: Gateway::single(policy),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn nothing_passes_while_the_authorization_server_is_asked(c in call_scenario()) {
        let policy = call_policy(c.exchange.is_some(), c.dpop_required);
        let mut run = call_run(policy, 0, c.shared_slots);
        let world = drive_with_calls(&c, &mut run, "call-1");
        check_with_calls(&c, &world, true);
        prop_assert!(!run.host.shared.contains(OPAQUE.as_bytes()), "a token was stored in shared data");
        if c.again {
            // A fresh proof, as a client makes for every request.
            let world = drive_with_calls(&c, &mut run, "call-2");
            check_with_calls(&c, &world, false);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn nothing_passes_before_its_verdict(r in request(), a in answer()) {
        let (world, mut run) = drive_request(&r);
        check_request(&r, &world);
        if world.forwarded.is_some() {
            let client = drive_answer(&mut run, &a);
            check_answer(&r, &a, &client);
        }
    }

    #[test]
    fn each_request_is_decided_under_its_own_server(r in routed_request(), a in answer()) {
        let (world, mut run) = drive_request(&r);

        check_request(&r, &world);
        if world.forwarded.is_some() {
            let client = drive_answer(&mut run, &a);
            check_answer(&r, &a, &client);
        }
    }

    #[test]
    fn no_list_answer_leaves_unfiltered(r in watched_request(), a in answer()) {
        let (world, mut run) = drive_request(&r);
        check_request(&r, &world);
        prop_assert!(watched(&r));
        let client = drive_answer(&mut run, &a);
        check_answer(&r, &a, &client);
    }
}

// ---------------------------------------------------------------------------
// Named cases: a worker at its limit of calls in flight, and audit mode
// when the authorization server cannot vouch for a token or give the
// upstream its own.

/// One POST of `body` with `authorization` through `policy`, on a worker
/// with `in_flight` calls to the authorization server already under way;
/// each call the filter makes is answered by `answer`, by purpose. What the
/// world saw, and every effect.
fn drive_one(
    policy: Policy,
    in_flight: usize,
    authorization: &str,
    body: &[u8],
    answer: impl Fn(Purpose) -> Option<CallAnswer>,
) -> (World, Vec<Effect>) {
    let mut run = call_run(policy, in_flight, true);
    run.host.request_body = body.to_vec();
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("authorization".to_string(), authorization.to_string()),
    ];
    let mut world = World {
        headers: headers.clone(),
        ..World::default()
    };
    let mut effects = Vec::new();
    let head = RequestHead::new("POST", "/mcp", headers);
    let output = run.event(|ex, env| ex.on_request_headers(env, head, false));
    after_request_callback(&mut world, &output, false);
    effects.extend(output.effects);
    let mut answered = 0;
    let mut body_sent = false;
    loop {
        if answered < world.calls.len() {
            let purpose = purpose_of(&world.calls[answered]);
            answered += 1;
            let output =
                run.event(|ex, env| ex.on_authorization_server_answer(env, answer(purpose)));
            after_request_callback(&mut world, &output, body_sent);
            effects.extend(output.effects);
        } else if !body_sent {
            body_sent = true;
            let output = run.event(|ex, env| ex.on_request_body(env, body.len(), true));
            after_request_callback(&mut world, &output, true);
            effects.extend(output.effects);
        } else {
            break;
        }
    }
    (world, effects)
}

fn sent(effects: &[Effect]) -> Option<&FilterAnswer> {
    effects.iter().find_map(|e| match e {
        Effect::SendAnswer(answer) => Some(answer),
        _ => None,
    })
}

fn counted(effects: &[Effect], name: &str) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Count(c, n) if c.name() == name && *n > 0))
}

/// The JSON-RPC error code of an answer.
fn error_code(answer: &FilterAnswer) -> i64 {
    let body: Value = serde_json::from_slice(&answer.body).expect("a JSON-RPC error");
    body["error"]["code"].as_i64().expect("a code")
}

fn header<'a>(answer: &'a FilterAnswer, name: &str) -> Option<&'a str> {
    answer
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn calls_for(world: &World, purpose: Purpose) -> usize {
    world
        .calls
        .iter()
        .filter(|c| purpose_of(c) == purpose)
        .count()
}

fn jwt_caller(roles: &[&str]) -> String {
    format!("Bearer {}", sign(&keys().a, A, roles, None))
}

fn audit(mut policy: Policy) -> Policy {
    policy.mode = Mode::Audit;
    policy
}

fn list_body() -> Vec<u8> {
    body_of(Payload::List)
}

fn issued(purpose: Purpose) -> Option<CallAnswer> {
    match purpose {
        Purpose::Introspection => introspection_answer(Introspected::Active, false),
        Purpose::TokenExchange => exchange_answer(Exchanged::Issued),
    }
}

#[test]
fn a_worker_at_its_limit_of_calls_in_flight_answers_503_and_forwards_nothing() {
    // (who calls, the answer's JSON-RPC code, the counters it moves)
    let cases = [
        (
            format!("Bearer {OPAQUE}"),
            false,
            -32006,
            ["introspection.busy", "denied.introspection_unavailable"],
        ),
        (
            jwt_caller(&["reader"]),
            true,
            -32007,
            ["token_exchange.busy", "denied.upstream_token_unavailable"],
        ),
    ];
    for (authorization, exchange, code, counters) in cases {
        let (world, effects) = drive_one(
            call_policy(exchange, false),
            MAX_CALLS_IN_FLIGHT,
            &authorization,
            &list_body(),
            issued,
        );
        assert!(world.calls.is_empty(), "no call past the limit");
        assert!(world.forwarded.is_none(), "nothing forwarded");
        let answer = sent(&effects).expect("answered");
        assert_eq!(answer.status, 503);
        assert_eq!(header(answer, "retry-after"), Some("5"));
        assert_eq!(error_code(answer), code);
        for counter in counters {
            assert!(counted(&effects, counter), "{counter}: {effects:?}");
        }
        // One call fewer in flight: the call is made and the request goes on.
        let (world, effects) = drive_one(
            call_policy(exchange, false),
            MAX_CALLS_IN_FLIGHT - 1,
            &authorization,
            &list_body(),
            issued,
        );
        assert_eq!(world.calls.len(), 1, "{effects:?}");
        assert!(world.forwarded.is_some(), "{effects:?}");
    }
    assert_eq!(MAX_CALLS_IN_FLIGHT, 64, "the README's figure");
}

#[test]
fn in_audit_mode_a_token_introspection_cannot_vouch_for_goes_on_with_no_identity_and_no_upstream_token(
) {
    // The authorization server calls the token inactive, cannot be reached,
    // answers garbage, or this worker is at its limit.
    let cases = [
        (Introspected::Inactive, 0, "invalid_token.inactive"),
        (
            Introspected::NoAnswer,
            0,
            "denied.introspection_unavailable",
        ),
        (Introspected::Garbage, 0, "denied.introspection_unavailable"),
        (
            Introspected::Active,
            MAX_CALLS_IN_FLIGHT,
            "denied.introspection_unavailable",
        ),
    ];
    for (introspected, in_flight, counter) in cases {
        let (world, effects) = drive_one(
            audit(call_policy(true, false)),
            in_flight,
            &format!("Bearer {OPAQUE}"),
            &list_body(),
            |purpose| match purpose {
                Purpose::Introspection => introspection_answer(introspected, false),
                Purpose::TokenExchange => exchange_answer(Exchanged::Issued),
            },
        );
        let what = format!("{introspected:?}, {in_flight} in flight");
        let forwarded = world.forwarded.as_ref().expect(&what);
        assert!(counted(&effects, counter), "{what}: {effects:?}");
        assert!(counted(&effects, "audit_would_deny"), "{what}");
        // No identity: nothing to exchange, no token of any kind upstream.
        assert_eq!(calls_for(&world, Purpose::TokenExchange), 0, "{what}");
        assert!(
            !forwarded
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("authorization")
                    || n.eq_ignore_ascii_case("x-mcp-roles")),
            "{what}: {forwarded:?}"
        );
    }
}

#[test]
fn in_audit_mode_a_failed_exchange_is_still_refused_and_nothing_forwarded() {
    // A verified caller (a JWT, or an opaque token introspection vouches
    // for), for a call the rules allow and for one they would refuse.
    let callers = [jwt_caller(&["reader"]), format!("Bearer {OPAQUE}")];
    let bodies = [list_body(), body_of(Payload::DeniedCall)];
    let failures = [
        (Exchanged::Refused, 0, 502),
        (Exchanged::WrongAudience, 0, 502),
        (Exchanged::ServerError, 0, 503),
        (Exchanged::NoAnswer, 0, 503),
        (Exchanged::Issued, MAX_CALLS_IN_FLIGHT, 503),
    ];
    for authorization in &callers {
        for body in &bodies {
            for (exchanged, in_flight, status) in failures {
                if authorization.contains(OPAQUE) && in_flight > 0 {
                    // At the limit an opaque token is not even introspected
                    // (the test above).
                    continue;
                }
                let (world, effects) = drive_one(
                    audit(call_policy(true, false)),
                    in_flight,
                    authorization,
                    body,
                    |purpose| match purpose {
                        Purpose::Introspection => introspection_answer(Introspected::Active, false),
                        Purpose::TokenExchange => exchange_answer(exchanged),
                    },
                );
                let what = format!(
                    "{exchanged:?}, {in_flight} in flight, {}",
                    String::from_utf8_lossy(body)
                );
                assert!(world.forwarded.is_none(), "{what}: {effects:?}");
                let answer = sent(&effects).expect(&what);
                assert_eq!(answer.status, status, "{what}");
                assert_eq!(error_code(answer), -32007, "{what}");
                assert!(
                    counted(&effects, "denied.upstream_token_unavailable"),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn in_audit_mode_a_call_the_rules_would_refuse_goes_on_with_the_exchanged_token() {
    let (world, effects) = drive_one(
        audit(call_policy(true, false)),
        0,
        &jwt_caller(&["reader"]),
        &body_of(Payload::DeniedCall),
        issued,
    );
    assert!(counted(&effects, "audit_would_deny"));
    assert_eq!(calls_for(&world, Purpose::TokenExchange), 1);
    let forwarded = world.forwarded.expect("audit mode lets it on");
    let authorization: Vec<&str> = forwarded
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        authorization,
        vec![format!("Bearer {}", exchanged_token(UPSTREAM_AUDIENCE)).as_str()]
    );
    // In enforce mode the same call is refused and makes no exchange.
    let (world, effects) = drive_one(
        call_policy(true, false),
        0,
        &jwt_caller(&["reader"]),
        &body_of(Payload::DeniedCall),
        issued,
    );
    assert_eq!(sent(&effects).map(|a| a.status), Some(403));
    assert!(world.calls.is_empty());
}
