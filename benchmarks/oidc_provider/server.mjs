// Benchmark baseline: npm oidc-provider configured like our server.
//
// - two public native clients (PKCE, token_endpoint_auth_method none, redirect
//   http://127.0.0.1/callback), refresh tokens via offline_access, rotation OFF:
//   - bench-native: access tokens are RS256 JWTs for a resource server (resource indicators,
//     accessTokenFormat 'jwt'), 1800 s: the refresh-grant load
//   - bench-userinfo: no resource, so its access tokens are oidc-provider's opaque userinfo
//     tokens (a JWT for a resource has an `aud` and /me refuses it): the userinfo load
// - ID tokens: RS256 (a 2048-bit RSA key made at start), also returned by the refresh grant
// - in-memory adapter (oidc-provider's default), dev interactions for login/consent over HTTP
//
// Listens on 127.0.0.1 on a free port (or $PORT) and prints one JSON line:
//   {"ready": true, "issuer": "...", "client_id": "...", "redirect_uri": "...", "scope": "...",
//    "resource": "...", "userinfo_client_id": "...", "userinfo_scope": "..."}
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const CLIENT_ID = 'bench-native';
const REDIRECT_URI = 'http://127.0.0.1/callback';
// A resource server stands in for Authgear's implicit API audience; its scope mirrors
// Authgear's full-access scope so the same scope string works on both servers.
const RESOURCE = 'urn:authgear-bench:api';
const RESOURCE_SCOPE = 'https://authgear.com/scopes/full-access';
const SCOPE = `openid offline_access ${RESOURCE_SCOPE}`;
// The userinfo client asks for the OIDC scopes only; `email` so /me answers sub + email +
// email_verified, about what our userinfo returns.
const USERINFO_CLIENT_ID = 'bench-userinfo';
const USERINFO_SCOPE = 'openid offline_access email';

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function makeProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: [CLIENT_ID, USERINFO_CLIENT_ID].map((clientId) => ({
      client_id: clientId,
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [REDIRECT_URI],
      id_token_signed_response_alg: 'RS256',
    })),
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomUUID()] },
    pkce: { required: () => true },
    rotateRefreshToken: false,
    ttl: {
      AccessToken: 1800,
      IdToken: 300,
      AuthorizationCode: 300,
      RefreshToken: 31449600,
      Grant: 31449600,
      Session: 31449600,
      Interaction: 3600,
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    findAccount: async (ctx, accountId) => ({
      accountId,
      claims: async () => ({ sub: accountId, email: accountId, email_verified: true }),
    }),
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // No resource for the userinfo client (undefined: none requested, none defaulted), so
        // its grant holds none and its access tokens are opaque, audience-less userinfo tokens.
        defaultResource: (ctx, client, oneOf) =>
          client.clientId === USERINFO_CLIENT_ID ? oneOf : RESOURCE,
        useGrantedResource: (ctx) => ctx.oidc.client?.clientId !== USERINFO_CLIENT_ID,
        getResourceServerInfo: () => ({
          scope: RESOURCE_SCOPE,
          audience: RESOURCE,
          accessTokenTTL: 1800,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
  });
  // Do not print every expected OAuth error (e.g. during a failed benchmark step) as a stack.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  handler = makeProvider(issuer).callback();
  process.stdout.write(
    `${JSON.stringify({ ready: true, issuer, client_id: CLIENT_ID, redirect_uri: REDIRECT_URI, scope: SCOPE, resource: RESOURCE, userinfo_client_id: USERINFO_CLIENT_ID, userinfo_scope: USERINFO_SCOPE })}\n`,
  );
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
