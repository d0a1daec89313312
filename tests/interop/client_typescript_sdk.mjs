// An MCP client built on the official TypeScript SDK
// (`@modelcontextprotocol/sdk`, protocol 2025-11-25), driven by the interop
// tests. The same JSON spec on stdin and `REPORT <json>` line on stdout as
// client_python_sdk2.py.
//
// Authorization code: an `OAuthClientProvider` implementation kept in memory,
// handed to `StreamableHTTPClientTransport`. The SDK runs discovery from the
// 401, registers the client, and calls `redirectToAuthorization(url)`; that
// is the interactive step the SDK leaves to the application: here a headless
// browser fetches the URL, follows the redirects (with a cookie jar) through
// the authorization server's auto-completing login and consent pages and
// keeps the `code` of the redirect to the callback URL. The SDK then throws
// `UnauthorizedError`, and the application finishes the flow as the SDK's
// examples do: `transport.finishAuth(code)`, then it retries (reconnects, or
// repeats the call that was interrupted by a step-up).
//
// Client credentials: the SDK's `ClientCredentialsProvider`.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const REDIRECT_URI = 'http://127.0.0.1:1/callback'; // never fetched: the browser stops at it

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

// A cookie jar just good enough for one authorization server on one host.
class CookieJar {
  constructor() {
    this.cookies = new Map(); // `${name};${path}` -> { name, value, path }
  }

  store(response, url) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = false;
      for (const attribute of attributes) {
        const [k, v = ''] = attribute.split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) < Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name};${path}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.cookies.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

// Plays the user agent of the authorization-code flow.
async function browse(authorizationUrl, { account, consent }, report) {
  const jar = new CookieJar();
  let url = authorizationUrl;
  for (let i = 0; i < 20; i++) {
    const headers = { 'x-test-account': account };
    if (consent !== null && consent !== undefined) headers['x-test-consent'] = consent;
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    const response = await fetch(url, { redirect: 'manual', headers });
    await response.arrayBuffer();
    jar.store(response, url);
    report.browser.push([new URL(url).pathname, response.status]);
    const location = response.headers.get('location');
    if (![301, 302, 303, 307, 308].includes(response.status) || !location) {
      throw new Error(`the authorization server stopped at ${url}: ${response.status}`);
    }
    url = new URL(location, url).href;
    if (url.startsWith(REDIRECT_URI)) {
      const params = new URL(url).searchParams;
      if (params.get('error')) throw new Error(`authorization refused: ${params}`);
      return params.get('code');
    }
  }
  throw new Error('too many redirects');
}

class InMemoryOAuthClientProvider {
  constructor(scenario, report) {
    this.scenario = scenario;
    this.report = report;
    this.pendingCode = undefined;
    this._clientInformation = undefined;
    this._tokens = undefined;
    this._codeVerifier = undefined;
  }

  get redirectUrl() {
    return REDIRECT_URI;
  }

  get clientMetadata() {
    return {
      client_name: 'mcp-authz interop (typescript sdk)',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() {
    return this._clientInformation;
  }

  saveClientInformation(info) {
    this._clientInformation = info;
    this.report.registered_client_id = info.client_id;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
    this.report.tokens.push({ scope: tokens.scope ?? null, refresh_token: Boolean(tokens.refresh_token) });
  }

  async redirectToAuthorization(authorizationUrl) {
    const n = this.report.authorizations.length;
    const consents = this.scenario.consents ?? [null];
    const consent = consents[Math.min(n, consents.length - 1)];
    const q = authorizationUrl.searchParams;
    this.report.authorizations.push({
      scope: q.get('scope'),
      resource: q.get('resource'),
      code_challenge_method: q.get('code_challenge_method'),
      consent,
    });
    this.pendingCode = await browse(authorizationUrl.href, { account: this.scenario.account ?? 'alice', consent }, this.report);
  }

  saveCodeVerifier(codeVerifier) {
    this._codeVerifier = codeVerifier;
  }

  codeVerifier() {
    return this._codeVerifier;
  }
}

function describeError(err) {
  const out = { type: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err).slice(0, 500) };
  if (typeof err?.code === 'number') out.code = err.code;
  return out;
}

async function runScenario(url, scenario) {
  const report = {
    name: scenario.name, http: [], browser: [], authorizations: [], tokens: [], steps: [],
    protocol_version: null, fatal: null, app_finished_auth: 0,
  };
  const recordingFetch = async (input, init) => {
    const response = await fetch(input, init);
    const headers = new Headers(init?.headers);
    report.http.push({
      method: init?.method ?? 'GET',
      url: String(input instanceof Request ? input.url : input),
      status: response.status,
      www_authenticate: response.headers.get('www-authenticate'),
      mcp_method: headers.get('mcp-method'),
    });
    return response;
  };

  let provider;
  if (scenario.flow === 'client_credentials') {
    provider = new ClientCredentialsProvider({
      clientId: scenario.client_id,
      clientSecret: scenario.client_secret,
      scope: scenario.scope,
      expectedIssuer: scenario.issuer,
    });
    const save = provider.saveTokens.bind(provider);
    provider.saveTokens = (tokens) => {
      report.tokens.push({ scope: tokens.scope ?? null, refresh_token: Boolean(tokens.refresh_token) });
      save(tokens);
    };
  } else {
    provider = new InMemoryOAuthClientProvider(scenario, report);
  }

  const newTransport = () => new StreamableHTTPClientTransport(new URL(url), { authProvider: provider, fetch: recordingFetch });
  let transport = newTransport();
  const client = new Client({ name: 'mcp-authz-interop', version: '1.0.0' });

  // What a TypeScript MCP application does when the SDK needs the user:
  // complete the redirect, hand the code to the transport, try again.
  // Rethrows anything but the SDK's "go authorize" signal.
  async function finishPendingAuthorization(err) {
    if (!(err instanceof UnauthorizedError) || provider.pendingCode === undefined) throw err;
    const code = provider.pendingCode;
    provider.pendingCode = undefined;
    report.app_finished_auth += 1;
    await transport.finishAuth(code);
  }

  async function withAuthorization(action) {
    try {
      return await action();
    } catch (err) {
      await finishPendingAuthorization(err);
      return action();
    }
  }

  try {
    try {
      await client.connect(transport);
    } catch (err) {
      await finishPendingAuthorization(err);
      await transport.close().catch(() => {});
      transport = newTransport();
      await client.connect(transport);
    }
    report.protocol_version = transport.protocolVersion ?? null;

    const listTools = async () => {
      const step = { step: 'list_tools' };
      try {
        const result = await withAuthorization(() => client.listTools());
        Object.assign(step, { ok: true, tools: result.tools.map((t) => t.name).sort() });
      } catch (err) {
        Object.assign(step, { ok: false, error: describeError(err) });
      }
      report.steps.push(step);
    };

    await listTools();
    for (const [name, args] of scenario.calls ?? []) {
      const step = { step: 'call', tool: name };
      try {
        const result = await withAuthorization(() => client.callTool({ name, arguments: args }));
        const text = result.content.filter((c) => c.type === 'text').map((c) => c.text).join(' ');
        Object.assign(step, { ok: true, result: { is_error: Boolean(result.isError), text } });
      } catch (err) {
        Object.assign(step, { ok: false, error: describeError(err) });
      }
      report.steps.push(step);
    }
    await listTools();
  } catch (err) {
    report.fatal = { type: err?.constructor?.name, message: String(err?.message ?? err).slice(0, 2000), traceback: String(err?.stack ?? '').slice(0, 4000) };
  } finally {
    await transport.terminateSession?.().catch(() => {});
    await client.close().catch(() => {});
  }
  return report;
}

const spec = await readStdin();
const reports = {};
for (const scenario of spec.scenarios) {
  reports[scenario.name] = await runScenario(spec.url, scenario);
}
process.stdout.write(`REPORT ${JSON.stringify(reports)}\n`);
process.exit(0);
