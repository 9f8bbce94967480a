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
// Logging in: the dev interactions ("login" accepts any name; then "consent").
// GET /__stats answers counts of token requests by grant type, for single-flight tests.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const RESOURCE = 'https://api.example.test/';

const stats = { authorization_code: 0, refresh_token: 0, refresh_token_errors: 0, revocations: 0 };

const server = createServer();
await new Promise((resolve) => { server.listen(port, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const publicClient = (clientId) => ({
  client_id: clientId,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/oauth-redirect', 'http://127.0.0.1/callback'],
});

const provider = new Provider(issuer, {
  clients: [publicClient('opaque-client'), publicClient('jwt-client')],
  jwks: { keys: [jwk] },
  cookies: { keys: ['test-only-cookie-key-0123456789'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'https://authgear.com/scopes/full-access'],
  async findAccount(_ctx, accountId) {
    return {
      accountId,
      async claims() {
        return { sub: accountId, email: `${accountId}@example.test`, email_verified: true, name: accountId };
      },
    };
  },
  features: {
    devInteractions: { enabled: true },
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
  ttl: { AccessToken: 3600, IdToken: 300, RefreshToken: 86400, Grant: 86400, Session: 86400, Interaction: 600 },
});

provider.on('grant.success', (ctx) => {
  const grantType = ctx.oidc.params.grant_type;
  if (grantType in stats) stats[grantType] += 1;
});
provider.on('grant.error', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') stats.refresh_token_errors += 1;
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/__stats') {
    ctx.type = 'json';
    ctx.body = stats;
    return;
  }
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token/revocation' && ctx.status === 200) {
    stats.revocations += 1;
  }
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
