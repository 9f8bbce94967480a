// A reference OpenID Provider (npm oidc-provider) for the Python client SDK tests.
//
// Listens on 127.0.0.1 on a free port (argv[2], default 0) and prints one JSON line
// {"issuer": "..."} on stdout once it accepts connections.
//
// Clients (all public: token_endpoint_auth_method "none", PKCE required, native so
// that any loopback port is accepted, refresh tokens rotated on every use, and reuse
// of a rotated refresh token revokes the whole grant):
//   - "opaque-client": opaque access tokens, usable at the userinfo endpoint.
//   - "jwt-client": JWT access tokens (RFC 9068) through resource indicators; the
//     userinfo endpoint refuses them, as oidc-provider does for any audience-bound token.
//   - "short-device-client": device codes live 3 seconds but are announced with expires_in
//     60, so that the server answers expired_token (tests of that error).
//   - "strict-device-client": device authorization answers interval 1, but polls less than
//     2 seconds apart get slow_down (RFC 8628 3.5), so the SDK's back-off can be observed.
// Every client may use the device authorization grant (features.deviceFlow, RFC 8628); the
// user code is entered at GET /device. ID tokens carry auth_time (require_auth_time) and
// Authgear's can_reauthenticate claim (false for accounts named "passwordless...").
// Logging in: the dev interactions ("login" accepts any name; then "consent").
// GET /__stats answers counts of token requests by grant type, for single-flight tests, and
// device_polls: {client_id: [ms timestamps of device_code polls]}.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const RESOURCE = 'https://api.example.test/';

const CAN_REAUTHENTICATE = 'https://authgear.com/claims/user/can_reauthenticate';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
// client_id -> [advertised interval (s), enforced minimum gap between polls (ms)]
const DEVICE_TIMING = { 'strict-device-client': [1, 2000] };
const DEFAULT_DEVICE_TIMING = [1, 0];

const stats = {
  authorization_code: 0,
  refresh_token: 0,
  refresh_token_errors: 0,
  revocations: 0,
  device_code: 0,
  slow_down: 0,
  device_polls: {},
};
const lastPoll = new Map(); // device_code -> ms

const server = createServer();
await new Promise((resolve) => { server.listen(port, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const publicClient = (clientId) => ({
  client_id: clientId,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code', 'refresh_token', DEVICE_GRANT],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/oauth-redirect', 'http://127.0.0.1/callback'],
  require_auth_time: true,
});

const provider = new Provider(issuer, {
  clients: ['opaque-client', 'jwt-client', 'short-device-client', 'strict-device-client'].map(publicClient),
  jwks: { keys: [jwk] },
  cookies: { keys: ['test-only-cookie-key-0123456789'] },
  claims: { openid: ['sub', CAN_REAUTHENTICATE], email: ['email', 'email_verified'], profile: ['name'] },
  // scope claims in ID tokens too (not only at userinfo), as Authgear's ID tokens carry them
  conformIdTokenClaims: false,
  scopes: ['openid', 'offline_access', 'email', 'profile', 'https://authgear.com/scopes/full-access'],
  async findAccount(_ctx, accountId) {
    return {
      accountId,
      async claims() {
        return {
          sub: accountId,
          email: `${accountId}@example.test`,
          email_verified: true,
          name: accountId,
          [CAN_REAUTHENTICATE]: !accountId.startsWith('passwordless'),
        };
      },
    };
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, client) => (client.clientId === 'jwt-client' ? RESOURCE : undefined),
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'openid offline_access',
        audience: RESOURCE,
        accessTokenTTL: 3600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  pkce: { required: () => true },
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: 3600,
    IdToken: 300,
    RefreshToken: 86400,
    Grant: 86400,
    Session: 86400,
    Interaction: 600,
    DeviceCode: (_ctx, _token, client) => (client.clientId === 'short-device-client' ? 3 : 600),
  },
});

provider.on('grant.success', (ctx) => {
  const grantType = ctx.oidc.params.grant_type;
  if (grantType === DEVICE_GRANT) stats.device_code += 1;
  else if (grantType in stats) stats[grantType] += 1;
});
provider.on('grant.error', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') stats.refresh_token_errors += 1;
});

async function readForm(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const form = querystring.parse(Buffer.concat(chunks).toString());
  ctx.request.body = form; // oidc-provider reads an already parsed body from here
  return form;
}

// RFC 8628 3.5 slow_down, which oidc-provider does not send: a poll sooner than the
// client's enforced gap after the previous one is answered slow_down.
function slowDown(ctx, form) {
  const now = Date.now();
  (stats.device_polls[form.client_id] ||= []).push(now);
  const last = lastPoll.get(form.device_code);
  lastPoll.set(form.device_code, now);
  const [, gap] = DEVICE_TIMING[form.client_id] || DEFAULT_DEVICE_TIMING;
  if (last === undefined || now - last >= gap) return false;
  stats.slow_down += 1;
  ctx.status = 400;
  ctx.type = 'json';
  ctx.body = { error: 'slow_down', error_description: 'poll less often' };
  return true;
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__stats') {
    ctx.type = 'json';
    ctx.body = stats;
    return;
  }
  let form;
  if (ctx.method === 'POST' && (ctx.path === '/token' || ctx.path === '/device/auth')) {
    form = await readForm(ctx);
    if (form.grant_type === DEVICE_GRANT && slowDown(ctx, form)) return;
  }
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && form) {
    // oidc-provider names no interval; RFC 8628 would then mean 5 s, too slow for tests
    [ctx.body.interval] = DEVICE_TIMING[form.client_id] || DEFAULT_DEVICE_TIMING;
    // so that the server's own expired_token (not the SDK's clock) ends the wait
    if (form.client_id === 'short-device-client') ctx.body.expires_in = 60;
  }
  if (ctx.method === 'POST' && ctx.path === '/token/revocation' && ctx.status === 200) {
    stats.revocations += 1;
  }
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
