// An upstream identity provider (npm oidc-provider) for the server's "Continue with ..." tests
// (issue 15): our server is its relying party.
//
// Usage: node upstream_idp.mjs <callback base>   e.g. http://127.0.0.1:4321/sso/oauth2/callback/
// Listens on 127.0.0.1 on a free port and prints one JSON line {"issuer": "..."} once it
// accepts connections.
//
// Clients: one per name below, each confidential (client_secret_basic, except "post-auth":
// client_secret_post) with secret "secret-<name>", PKCE required, and the single redirect URI
// <callback base><name> (so the name is our provider alias). Most answer like any OP; the
// hostile ones change the ID token of the token response after oidc-provider issued it:
//   wrong-iss   iss is another issuer               wrong-aud  aud is another client
//   bad-sig     signed by another key, same kid     expired    exp two minutes ago
//   unknown-kid signed by a key of a kid not in the JWKS (the RP fetches the JWKS again, once)
//   no-nonce    no nonce claim                      bad-nonce  a nonce we never sent
//   unverified  email_verified: false               userinfo   no email claims (userinfo has them)
// Accounts: the dev interactions' "login" accepts any name; the account's email is the name
// if it contains "@", else <name>@example.test (verified). GET /__stats counts token requests
// and JWKS fetches.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import { SignJWT, decodeJwt, decodeProtectedHeader, importJWK } from 'jose';

const callbackBase = process.argv[2];
if (!callbackBase) {
  process.stderr.write('usage: node upstream_idp.mjs <callback base>\n');
  process.exit(2);
}

const HOSTILE = {
  'wrong-iss': (c) => ({ ...c, iss: 'https://evil.example' }),
  'wrong-aud': (c) => ({ ...c, aud: 'someone-else' }),
  expired: (c) => ({ ...c, exp: Math.floor(Date.now() / 1000) - 120 }),
  'no-nonce': ({ nonce, ...c }) => c,
  'bad-nonce': (c) => ({ ...c, nonce: 'a-nonce-we-never-sent' }),
  unverified: (c) => ({ ...c, email_verified: false }),
  userinfo: ({ email, email_verified, ...c }) => c,
};
const NAMES = ['good', 'other', 'linking', 'post-auth', 'bad-sig', 'unknown-kid', ...Object.keys(HOSTILE)];
const stats = { token: 0, jwks: 0 };

const server = createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const keyPair = (kid) => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
};
const kid = randomUUID();
const jwk = keyPair(kid);
const rogue = keyPair(kid); // same kid, another key: a forged signature
const stranger = keyPair(randomUUID()); // a kid the JWKS never lists

const provider = new Provider(issuer, {
  clients: NAMES.map((name) => ({
    client_id: name,
    client_secret: `secret-${name}`,
    token_endpoint_auth_method: name === 'post-auth' ? 'client_secret_post' : 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [`${callbackBase}${name}`],
  })),
  jwks: { keys: [jwk] },
  cookies: { keys: ['upstream-test-only-cookie-key-0123456789'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false,
  scopes: ['openid', 'email', 'profile'],
  async findAccount(_ctx, accountId) {
    return {
      accountId,
      async claims() {
        const email = accountId.includes('@') ? accountId : `${accountId}@example.test`;
        return { sub: accountId, email, email_verified: true, name: `Test ${accountId}` };
      },
    };
  },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  ttl: { AccessToken: 600, IdToken: 600, Grant: 600, Session: 600, Interaction: 600 },
});

async function resign(idToken, change, key) {
  const header = { ...decodeProtectedHeader(idToken), kid: key.kid };
  const claims = change(decodeJwt(idToken));
  return new SignJWT(claims).setProtectedHeader(header).sign(await importJWK(key, 'RS256'));
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__stats') {
    ctx.type = 'json';
    ctx.body = stats;
    return;
  }
  await next();
  if (ctx.path === '/jwks') stats.jwks += 1;
  if (ctx.path === '/token' && ctx.method === 'POST') {
    stats.token += 1;
    const clientId = ctx.oidc?.client?.clientId;
    if (ctx.status === 200 && ctx.body?.id_token && clientId) {
      if (clientId === 'bad-sig') {
        ctx.body.id_token = await resign(ctx.body.id_token, (c) => c, rogue);
      } else if (clientId === 'unknown-kid') {
        ctx.body.id_token = await resign(ctx.body.id_token, (c) => c, stranger);
      } else if (HOSTILE[clientId]) {
        ctx.body.id_token = await resign(ctx.body.id_token, HOSTILE[clientId], jwk);
      }
    }
  }
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
