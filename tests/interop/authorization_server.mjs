// A real OAuth 2.1 authorization server for the interop tests: npm
// `oidc-provider` (a certified OpenID provider), set up the way a Keycloak
// realm for an MCP server is:
//
//   - issuer http://127.0.0.1:<port>, OpenID discovery (RFC 8414 metadata is
//     published only at /.well-known/openid-configuration, as oidc-provider
//     does: clients and the filter must fall back to it);
//   - RS256 JWT access tokens for a resource indicator (RFC 8707): `aud` is
//     the MCP resource URI, scopes `mcp:read mcp:write`, `scope`
//     space-separated, roles in `realm_access.roles`;
//   - grants: authorization_code with PKCE, refresh_token,
//     client_credentials; open dynamic client registration (RFC 7591);
//   - DPoP (RFC 9449): a token request that carries a DPoP proof gets an
//     access token bound to the proof's key (`cnf.jkt`, token_type DPoP);
//     proofs in ES256, ES384, EdDSA, RS256 and PS256;
//   - headless login: the interaction pages finish login and consent at
//     once, for the user the "browser" names. A test's browser sends
//     `X-Test-Account: alice|carol` (alice is a reader, carol an admin;
//     default: alice) and may send `X-Test-Consent: <scopes>`: the user then
//     approves only those of the requested scopes and declines the rest (as
//     a person unticking a box on a consent screen would);
//   - pre-registered confidential clients for client_credentials:
//     `svc-reader` / `svc-admin` (secret `<id>-secret`); their role is
//     client metadata (`mcp_role`) that only the administrator sets, never
//     dynamic registration. `svc-opaque-reader` / `svc-opaque-admin` get
//     opaque access tokens (client metadata `mcp_token_format: opaque`),
//     side by side with the JWTs of the others;
//   - token introspection (RFC 7662, oidc-provider's own), open only to the
//     gateway's clients: `mcp-gateway` (secret `mcp-gateway-secret`) and,
//     when the environment variable GATEWAY_PUBLIC_JWK holds a public P-256
//     JWK, `mcp-gateway-pkjwt`, which authenticates with `private_key_jwt`
//     (ES256) under that key; and token revocation;
//   - RFC 8693 token exchange for `mcp-gateway`. This grant is CUSTOM: the
//     test's own code below, registered through oidc-provider's grant-type
//     extension API (`provider.registerGrantType`), since oidc-provider has
//     no token exchange of its own. It accepts an access token of this
//     server (opaque or JWT) issued for an MCP resource, and issues an RS256
//     JWT for the `audience` asked for, if it is one of DOWNSTREAM. For the
//     tests of a misbehaving server, the audience `misissued-api` gets a
//     token whose `aud` is the subject token's own (the MCP server's).
//
// Usage: node authorization_server.mjs --port P --resource URI [--resource URI...] [--events FILE]
//
// Every registration, authorization and token issued is appended to FILE as
// one JSON line, so the tests can prove which discovery and token requests a
// client really made.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.AS_PORT },
    resource: { type: 'string', multiple: true, default: process.env.MCP_RESOURCE ? process.env.MCP_RESOURCE.split(' ') : [] },
    events: { type: 'string', default: process.env.AS_EVENTS },
  },
});

if (!args.port || args.resource.length === 0) {
  console.error('usage: node authorization_server.mjs --port P --resource URI [--resource URI...] [--events FILE]');
  process.exit(2);
}

const PORT = Number(args.port);
const ISSUER = `http://127.0.0.1:${PORT}`;
const RESOURCES = new Set(args.resource);
const MCP_SCOPES = 'mcp:read mcp:write';

// The people who can log in, and their realm roles.
const ACCOUNTS = {
  alice: { roles: ['reader'], name: 'Alice Reader' },
  carol: { roles: ['admin'], name: 'Carol Admin' },
};
const DEFAULT_ACCOUNT = 'alice';

function record(event) {
  const line = `${JSON.stringify({ time: Date.now() / 1000, ...event })}\n`;
  if (args.events) {
    fs.appendFileSync(args.events, line);
  }
  process.stdout.write(line);
}

// A fresh RS256 signing key per run.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `rs256-${crypto.randomUUID().slice(0, 8)}`, alg: 'RS256', use: 'sig' };

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const GATEWAY = 'mcp-gateway';
// The audiences an exchange may ask for (the upstream's downstream APIs).
const DOWNSTREAM = new Set(['downstream-api', 'misissued-api']);

const serviceClient = (role, format) => ({
  client_id: format === 'opaque' ? `svc-opaque-${role}` : `svc-${role}`,
  client_secret: format === 'opaque' ? `svc-opaque-${role}-secret` : `svc-${role}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: MCP_SCOPES,
  mcp_role: role,
  mcp_token_format: format,
});

const configuration = {
  clients: [
    serviceClient('reader', 'jwt'),
    serviceClient('admin', 'jwt'),
    serviceClient('reader', 'opaque'),
    serviceClient('admin', 'opaque'),
    {
      client_id: GATEWAY,
      client_secret: `${GATEWAY}-secret`,
      grant_types: [TOKEN_EXCHANGE],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    ...(process.env.GATEWAY_PUBLIC_JWK ? [{
      client_id: `${GATEWAY}-pkjwt`,
      grant_types: [TOKEN_EXCHANGE],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [JSON.parse(process.env.GATEWAY_PUBLIC_JWK)] },
    }] : []),
  ],
  extraClientMetadata: {
    properties: ['mcp_role', 'mcp_token_format'],
    validator(ctx, key, value) {
      // Roles are the administrator's to give: a dynamically registered
      // client cannot make itself an admin.
      if (['mcp_role', 'mcp_token_format'].includes(key) && value !== undefined && ctx?.oidc?.route === 'registration') {
        throw new errors.InvalidClientMetadata(`${key} is assigned by the administrator`);
      }
    },
  },
  jwks: { keys: [signingKey] },
  scopes: ['openid', 'offline_access', 'mcp:read', 'mcp:write'],
  claims: { openid: ['sub'], profile: ['name'] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  enabledJWA: {
    dPoPSigningAlgValues: ['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256'],
  },
  features: {
    dPoP: { enabled: true },
    devInteractions: { enabled: false },
    registration: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: {
      enabled: true,
      // Only the gateway may learn what a token is worth.
      allowedPolicy: async (ctx, client) => [GATEWAY, `${GATEWAY}-pkjwt`].includes(client.clientId),
    },
    resourceIndicators: {
      enabled: true,
      async getResourceServerInfo(ctx, resourceIndicator, client) {
        if (!RESOURCES.has(resourceIndicator)) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        const opaque = client?.mcp_token_format === 'opaque';
        return {
          scope: MCP_SCOPES,
          audience: resourceIndicator,
          accessTokenTTL: 10 * 60,
          accessTokenFormat: opaque ? 'opaque' : 'jwt',
          ...(opaque ? {} : { jwt: { sign: { alg: 'RS256' } } }),
        };
      },
    },
  },
  pkce: { required: () => true },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(ctx, id) {
    if (!ACCOUNTS[id]) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, name: ACCOUNTS[id].name }) };
  },
  async extraTokenClaims(ctx, token) {
    let roles = [];
    if (token.accountId) {
      roles = ACCOUNTS[token.accountId]?.roles ?? [];
    } else if (token.clientId) {
      const client = await ctx.oidc.provider.Client.find(token.clientId);
      roles = client?.mcp_role ? [client.mcp_role] : [];
    }
    return { realm_access: { roles } };
  },
  ttl: {
    AccessToken: 10 * 60,
    ClientCredentials: 10 * 60,
    AuthorizationCode: 60,
    Interaction: 10 * 60,
    Session: 60 * 60,
    Grant: 60 * 60,
    RefreshToken: 60 * 60,
  },
};

const provider = new Provider(ISSUER, configuration);

// Every introspection the server answers, for the tests to count.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'introspection') {
    record({ event: 'introspection', client_id: ctx.oidc.client?.clientId, active: ctx.body?.active === true, status: ctx.status });
  }
});

const publicKey = crypto.createPublicKey({ key: { kty: 'RSA', n: signingKey.n, e: signingKey.e }, format: 'jwk' });

function signJwt(payload) {
  const header = { alg: 'RS256', typ: 'at+jwt', kid: signingKey.kid };
  const part = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${part(header)}.${part(payload)}`;
  return `${input}.${crypto.sign('RSA-SHA256', Buffer.from(input), privateKey).toString('base64url')}`;
}

// The subject token's claims, if it is a valid access token of this server:
// opaque (looked up) or a JWT it signed.
async function subjectClaims(token) {
  const parts = token.split('.');
  if (parts.length === 3) {
    const ok = crypto.verify('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), publicKey, Buffer.from(parts[2], 'base64url'));
    if (!ok) return undefined;
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    return claims.exp > Date.now() / 1000 && claims.iss === ISSUER ? claims : undefined;
  }
  const found = (await provider.AccessToken.find(token)) || (await provider.ClientCredentials.find(token));
  if (!found?.isValid) return undefined;
  return { sub: found.accountId || found.clientId, aud: found.aud, scope: found.scope, ...found.extra };
}

// RFC 8693 token exchange: the CUSTOM grant described at the top.
provider.registerGrantType(TOKEN_EXCHANGE, async (ctx) => {
  const { params, client } = ctx.oidc;
  const fail = (error, description) => {
    record({ event: 'exchange', client_id: client.clientId, audience: params.audience, error });
    ctx.status = 400;
    ctx.body = { error, error_description: description };
  };
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    return fail('invalid_request', 'subject_token_type must be an access token');
  }
  const subject = await subjectClaims(params.subject_token);
  const audiences = [].concat(subject?.aud ?? []);
  if (!subject || !audiences.some((a) => RESOURCES.has(a))) {
    return fail('invalid_grant', 'subject token not valid here');
  }
  if (!DOWNSTREAM.has(params.audience)) {
    return fail('invalid_target', 'audience not allowed');
  }
  const now = Math.floor(Date.now() / 1000);
  const aud = params.audience === 'misissued-api' ? audiences[0] : params.audience;
  const token = signJwt({
    iss: ISSUER, sub: subject.sub, aud, iat: now, exp: now + 300, jti: crypto.randomUUID(),
    client_id: client.clientId, scope: params.scope || undefined, act: { sub: client.clientId },
    realm_access: subject.realm_access,
  });
  record({ event: 'exchange', client_id: client.clientId, audience: params.audience, sub: subject.sub, issued_aud: aud });
  ctx.body = { access_token: token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: 300 };
}, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope']);

provider.on('registration_create.success', (ctx, client) => {
  record({
    event: 'register',
    client_id: client.clientId,
    grant_types: client.grantTypes,
    redirect_uris: client.redirectUris,
    token_endpoint_auth_method: client.clientAuthMethod,
    scope: client.scope,
    user_agent: ctx.get('user-agent'),
  });
});

provider.on('authorization.success', (ctx) => {
  const { params } = ctx.oidc;
  record({
    event: 'authorize',
    client_id: params.client_id,
    scope: params.scope,
    resource: params.resource,
    code_challenge_method: params.code_challenge_method,
    account: ctx.oidc.session?.accountId,
  });
});

provider.on('grant.success', (ctx) => {
  const { params, entities } = ctx.oidc;
  const token = entities.AccessToken || entities.ClientCredentials;
  record({
    event: 'token',
    grant_type: params.grant_type,
    client_id: ctx.oidc.client?.clientId,
    requested_resource: params.resource,
    requested_scope: params.scope,
    account: token?.accountId,
    aud: token?.aud ?? token?.resourceServer?.audience,
    scope: token?.scope,
    format: token?.resourceServer?.accessTokenFormat ?? 'opaque',
    dpop_jkt: token?.jkt,
    refresh_token: Boolean(entities.RefreshToken),
  });
});

for (const event of ['server_error', 'grant.error', 'authorization.error', 'registration_create.error', 'introspection.error']) {
  provider.on(event, (ctx, err) => {
    record({ event: 'error', kind: event, error: err?.error ?? String(err), description: err?.error_description, detail: err?.error_detail, route: ctx?.oidc?.route });
  });
}

// The headless "user": finishes login and consent as soon as the browser
// arrives, for the account the browser names.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  const accountId = String(req.headers['x-test-account'] || DEFAULT_ACCOUNT);
  const consentHeader = req.headers['x-test-consent'];
  const approves = consentHeader === undefined ? null : new Set(String(consentHeader).split(' ').filter(Boolean));
  const ok = (scope) => approves === null || approves.has(scope) || scope === 'openid' || scope === 'offline_access';

  if (prompt.name === 'login') {
    if (!ACCOUNTS[accountId]) {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'unknown test account' });
      return;
    }
    record({ event: 'login', account: accountId, client_id: params.client_id });
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }

  if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope = [], missingOIDCClaims, missingResourceScopes = {} } = prompt.details;
    const approved = missingOIDCScope.filter(ok);
    const declined = missingOIDCScope.filter((s) => !ok(s));
    if (approved.length) grant.addOIDCScope(approved.join(' '));
    if (declined.length) grant.rejectOIDCScope(declined.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    const consented = {};
    for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
      const yes = scopes.filter(ok);
      const no = scopes.filter((s) => !ok(s));
      if (yes.length) grant.addResourceScope(indicator, yes.join(' '));
      if (no.length) grant.rejectResourceScope(indicator, no.join(' '));
      consented[indicator] = { approved: yes, declined: no };
    }
    record({ event: 'consent', account: session.accountId, client_id: params.client_id, resources: consented });
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
    return;
  }

  res.writeHead(501, { 'content-type': 'text/plain' });
  res.end(`prompt ${prompt.name} is not handled by the test server`);
}

const app = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      record({ event: 'error', kind: 'interaction', error: String(err) });
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain' });
      }
      res.end(String(err));
    });
    return;
  }
  app(req, res);
});

server.listen(PORT, '127.0.0.1', () => {
  record({ event: 'listening', issuer: ISSUER, resources: [...RESOURCES], kid: signingKey.kid });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
