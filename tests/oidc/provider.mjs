// A real OpenID Provider (node-oidc-provider) for qlik-gateway's OIDC tests, on loopback only.
// Started and driven by tests/it/common/oidc.rs; see the "Contract" section below.
//
// Contract
//   Environment:
//     PORT     listen port on 127.0.0.1 (0 or unset = ephemeral). Issuer: http://127.0.0.1:<port>
//     CLIENTS  JSON array of client metadata (client_id, client_secret, redirect_uris,
//              post_logout_redirect_uris, token_endpoint_auth_method, ...). Default: [].
//     TTL      optional JSON object merged into oidc-provider's `ttl` (seconds), e.g. {"IdToken":5}
//   stdout: exactly one line, {"issuer":"http://127.0.0.1:N","port":N}, once listening.
//   stderr: oidc-provider warnings and one line per server error.
//   Accounts: alice / alice-pw, bob / bob-pw (see ACCOUNTS).
//   Scopes: openid, profile (name, preferred_username, upn), email (email, email_verified),
//     groups (groups), upn (upn). Scope claims go into the ID token too (conformIdTokenClaims off).
//   Login: GET /interaction/<uid> is an HTML form (username, password, submit; a second submit
//     `deny=1` ends the request with error=access_denied). Consent is granted implicitly.
//   PKCE (S256) is required for every client; nonce is passed through.
//   Logout: /session/end shows a form that must be POSTed (a browser auto-submits it by script;
//     the form carries xsrf and logout=yes as hidden inputs). Then 303 to post_logout_redirect_uri.
//   Test endpoints (loopback peers only):
//     GET  /test/health                 200 {"ok":true}
//     POST /test/rotate-keys[?drop_old=1]  new RS256 signing key first in JWKS and used for new
//                                       ID tokens; old keys stay published unless drop_old=1.
//                                       200 {"kid":NEW,"kids":[...published]}
//     POST /test/clients                body: a client object or array; adds or replaces clients
//                                       by client_id. 200 {"client_ids":[...]}
//     GET  /test/clients                200 the client metadata in use
import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const ACCOUNTS = [
  {
    username: 'alice',
    password: 'alice-pw',
    claims: {
      sub: 'alice-sub',
      preferred_username: 'alice',
      upn: 'alice@corp.example.com',
      email: 'alice@corp.example.com',
      email_verified: true,
      name: 'Alice Example',
      groups: ['Sales', 'Qlik Admins'],
    },
  },
  {
    username: 'bob',
    password: 'bob-pw',
    claims: {
      sub: 'bob-sub',
      preferred_username: 'CORP\\bob',
      upn: 'bob@corp.example.com',
      email: 'bob@corp.example.com',
      email_verified: true,
      name: 'Bob Example',
      groups: ['Staff'],
    },
  },
];

function fail(message) {
  process.stderr.write(`oidc test provider: ${message}\n`);
  process.exit(2);
}

function parseJsonEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  try {
    return JSON.parse(raw);
  } catch (err) {
    return fail(`${name} is not valid JSON: ${err.message}`);
  }
}

const port = Number(process.env.PORT ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad PORT ${process.env.PORT}`);
let clients = parseJsonEnv('CLIENTS', []);
if (!Array.isArray(clients)) fail('CLIENTS must be a JSON array');
const ttlOverrides = parseJsonEnv('TTL', {});

let keySerial = 0;
function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  keySerial += 1;
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `test-key-${keySerial}-${randomBytes(4).toString('hex')}`,
    alg: 'RS256',
    use: 'sig',
  };
}

// The first key signs new tokens (oidc-provider picks the first matching key).
let signingKeys = [newSigningKey()];
const cookieKeys = [randomBytes(32).toString('hex')];

const html = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${html(title)}</title></head>
<body>
${body}
</body>
</html>
`;
}

function loginPage(uid, { username = '', error } = {}) {
  return page('Sign in - Test IdP', `<h1>Sign in to the test IdP</h1>
${error ? `<p id="error" role="alert">${html(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${html(uid)}/login" autocomplete="off">
  <input type="hidden" name="uid" value="${html(uid)}">
  <label>Username <input type="text" name="username" value="${html(username)}" autofocus></label>
  <label>Password <input type="password" name="password"></label>
  <button type="submit" name="login" value="1">Sign in</button>
  <button type="submit" name="deny" value="1">Cancel</button>
</form>`);
}

// First-party clients: every requested scope and claim is granted without a consent screen.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const { clientId } = oidc.client;
  const { accountId } = oidc.account;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!grant || grant.accountId !== accountId || grant.clientId !== clientId) {
    grant = new oidc.provider.Grant({ clientId, accountId });
  }
  const scopes = [...oidc.requestParamOIDCScopes];
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  const claims = [...oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

async function logoutSource(ctx, form) {
  // A browser submits the confirmation by script; a plain HTTP client POSTs the form itself.
  const autoForm = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
  ctx.body = page('Sign out - Test IdP', `<h1>Signing out</h1>
${autoForm}
<button type="submit" form="op.logoutForm">Sign out</button>
<script>document.forms[0].submit();</script>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out - Test IdP', '<h1>Signed out</h1>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error - Test IdP', `<h1>Error</h1>
<pre id="error">${html(JSON.stringify(out))}</pre>`);
}

function buildProvider(issuer) {
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    async findAccount(ctx, sub) {
      const account = ACCOUNTS.find((a) => a.claims.sub === sub);
      if (!account) return undefined;
      return { accountId: sub, claims: async () => ({ ...account.claims }) };
    },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'upn'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
      upn: ['upn'],
    },
    conformIdTokenClaims: false,
    loadExistingGrant,
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      claimsParameter: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    },
    pkce: { methods: ['S256'], required: () => true },
    responseTypes: ['code'],
    renderError,
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 60,
      IdToken: 600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      ...ttlOverrides,
    },
  });
  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`oidc test provider: server_error ${ctx.method} ${ctx.path}: ${err.stack}\n`);
  });
  return provider;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 1 << 20) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'application/json') {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': `${type}; charset=utf-8`,
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function isLoopback(addr = '') {
  return addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.');
}

let issuer;
let provider;
let providerCallback;

function install(p) {
  provider = p;
  providerCallback = p.callback();
}

async function testEndpoint(req, res, url) {
  if (!isLoopback(req.socket.remoteAddress)) return send(res, 403, { error: 'loopback only' });
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /test/health':
      return send(res, 200, { ok: true, issuer });
    case 'POST /test/rotate-keys': {
      const key = newSigningKey();
      const dropOld = ['1', 'true', 'yes'].includes(url.searchParams.get('drop_old') ?? '');
      signingKeys = dropOld ? [key] : [key, ...signingKeys];
      install(buildProvider(issuer));
      return send(res, 200, { kid: key.kid, kids: signingKeys.map((k) => k.kid) });
    }
    case 'GET /test/clients':
      return send(res, 200, clients);
    case 'POST /test/clients': {
      let added;
      try {
        added = JSON.parse(await readBody(req));
      } catch (err) {
        return send(res, 400, { error: `invalid JSON: ${err.message}` });
      }
      added = Array.isArray(added) ? added : [added];
      const ids = new Set(added.map((c) => c.client_id));
      const previous = clients;
      clients = [...previous.filter((c) => !ids.has(c.client_id)), ...added];
      try {
        install(buildProvider(issuer));
      } catch (err) {
        clients = previous;
        return send(res, 400, { error: `invalid client metadata: ${err.message}` });
      }
      return send(res, 200, { client_ids: clients.map((c) => c.client_id) });
    }
    default:
      return send(res, 404, { error: `no test endpoint ${route}` });
  }
}

async function interaction(req, res, url) {
  const [, , uid, action] = url.pathname.split('/');
  const current = provider;
  let details;
  try {
    details = await current.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, page('Error - Test IdP', `<h1>Error</h1><pre id="error">${html(err.message)}</pre>`), 'text/html');
  }
  if (details.uid !== uid) {
    return send(res, 400, page('Error - Test IdP', '<h1>Error</h1><pre id="error">interaction mismatch</pre>'), 'text/html');
  }
  const { prompt } = details;

  if (req.method === 'GET' && action === undefined) {
    if (prompt.name === 'login') return send(res, 200, loginPage(uid), 'text/html');
    if (prompt.name === 'consent') {
      // Normally resolved by loadExistingGrant; grant what is asked for if it ever shows up.
      const grant = details.grantId
        ? await current.Grant.find(details.grantId)
        : new current.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      const grantId = await grant.save();
      return current.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    return send(res, 400, page('Error - Test IdP', `<h1>Error</h1><pre id="error">unsupported prompt ${html(prompt.name)}</pre>`), 'text/html');
  }

  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    if (form.get('deny')) {
      return current.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'End-User cancelled the sign-in',
      }, { mergeWithLastSubmission: false });
    }
    const username = form.get('username') ?? '';
    const account = ACCOUNTS.find((a) => a.username === username && a.password === form.get('password'));
    if (!account) {
      return send(res, 401, loginPage(uid, { username, error: 'Invalid username or password.' }), 'text/html');
    }
    return current.interactionFinished(req, res, {
      login: { accountId: account.claims.sub, amr: ['pwd'] },
    }, { mergeWithLastSubmission: false });
  }

  return send(res, 405, { error: 'method not allowed' });
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  try {
    if (url.pathname.startsWith('/test/')) return await testEndpoint(req, res, url);
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res, url);
    return providerCallback(req, res);
  } catch (err) {
    process.stderr.write(`oidc test provider: ${req.method} ${url.pathname}: ${err.stack}\n`);
    if (!res.headersSent) send(res, 500, { error: 'server_error', error_description: err.message });
    else res.destroy();
    return undefined;
  }
}

const server = http.createServer((req, res) => {
  handle(req, res);
});
server.on('error', (err) => fail(`listen: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}`;
  try {
    install(buildProvider(issuer));
  } catch (err) {
    fail(`configuration rejected: ${err.message}`);
  }
  process.stdout.write(`${JSON.stringify({ issuer, port: actual })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
