// Interop: npm openid-client v6 drives a full code + PKCE flow against our server.
//
// Environment: ISSUER, CLIENT_ID, REDIRECT_URI, EMAIL, PASSWORD (optional SCOPE, TOTP_SECRET:
// the user's authenticator-app key; with it, our second-factor page is answered with a code
// computed here per RFC 6238, after one wrong code).
// Steps: discovery -> authorize URL (PKCE S256, state, nonce) -> our login form (cookies kept
// here, CSRF token from the form; one wrong password first) -> 303 to redirect_uri ->
// authorizationCodeGrant (state, nonce, PKCE, RFC 9207 iss checked) -> refreshTokenGrant ->
// fetchUserInfo -> tokenRevocation of the refresh token -> refresh fails with invalid_grant, and
// the access token of the revoked grant is rejected by userinfo.
//
// Prints ONE JSON line: {"ok": true, ...} or {"ok": false, "step", "error", ...}; exits 1 on
// failure. Tokens, codes and passwords are never printed.
import { createHmac } from 'node:crypto';
import * as client from 'openid-client';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required`);
  return value;
};

const HTTP_TIMEOUT_MS = 15_000;
const result = { ok: false, steps: [] };
let step = 'setup';

function done(name, details = {}) {
  result.steps.push(name);
  Object.assign(result, details);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// --- a small cookie jar (one origin: our server) ---------------------------------------------
const jar = new Map();

function storeCookies(response) {
  for (const line of response.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    if (eq < 1) continue;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const expired = attrs.some((a) => /^\s*max-age\s*=\s*(0|-\d+)\s*$/i.test(a));
    if (expired || value === '') jar.delete(name);
    else jar.set(name, value);
  }
}

function cookieHeader() {
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

async function request(url, init = {}) {
  const headers = new Headers(init.headers);
  if (jar.size) headers.set('cookie', cookieHeader());
  const response = await fetch(url, {
    ...init,
    headers,
    redirect: 'manual',
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  storeCookies(response);
  return response;
}

function location(response, base) {
  const value = response.headers.get('location');
  check(value, `HTTP ${response.status} from ${base} without a Location header`);
  return new URL(value, base);
}

const unescapeHtml = (s) =>
  s.replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&#x27;/g, "'")
    .replace(/&lt;/g, '<').replace(/&gt;/g, '>');

function parseForm(html, pageUrl) {
  const token = html.match(/name="csrf_token"\s+value="([^"]*)"/);
  check(token, 'no hidden csrf_token input on the login page');
  const form = html.match(/<form\b[^>]*>/i);
  check(form, 'no <form> on the login page');
  check(/method="post"/i.test(form[0]), `login form is not method="post": ${form[0]}`);
  const action = form[0].match(/\baction="([^"]*)"/i);
  const target = action && action[1] ? new URL(unescapeHtml(action[1]), pageUrl) : new URL(pageUrl);
  return { csrfToken: unescapeHtml(token[1]), action: target };
}

// --- RFC 6238 TOTP (SHA-1, 6 digits, 30 s), as an authenticator app computes it -------------
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of text.replace(/[\s=]/g, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    check(v >= 0, 'TOTP_SECRET is not base32');
    bits += v.toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

function totp(secret, stepsFromNow = 0) {
  const counter = Math.floor(Date.now() / 1000 / 30) + stepsFromNow;
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', base32Decode(secret)).update(message).digest();
  const offset = mac[mac.length - 1] & 0xf;
  return ((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).toString().padStart(6, '0');
}

async function postForm(form, fields) {
  return request(form.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ csrf_token: form.csrfToken, ...fields }).toString(),
  });
}

// Our second-factor page: one wrong code (the form comes back), then the right one.
async function answerTotp(pageUrl, secret) {
  const page = await request(pageUrl);
  check(page.status === 200, `TOTP page answered ${page.status}`);
  let form = parseForm(await page.text(), pageUrl);
  const right = totp(secret);
  const wrongCode = right === '000000' ? '111111' : '000000';
  const wrong = await postForm(form, { code: wrongCode });
  check(wrong.status === 401, `a wrong TOTP code answered ${wrong.status}, expected 401`);
  form = parseForm(await wrong.text(), pageUrl);
  const response = await postForm(form, { code: right });
  check(response.status === 303, `the TOTP code answered ${response.status}, expected 303`);
  return response;
}

async function postLogin(form, email, password) {
  return request(form.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ csrf_token: form.csrfToken, email, password }).toString(),
  });
}

async function main() {
  const issuer = env('ISSUER');
  const clientId = env('CLIENT_ID');
  const redirectUri = env('REDIRECT_URI');
  const email = env('EMAIL');
  const password = env('PASSWORD');
  const scope = process.env.SCOPE || 'openid offline_access https://authgear.com/scopes/full-access';

  step = 'discovery';
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), {
    execute: [client.allowInsecureRequests],
    timeout: HTTP_TIMEOUT_MS / 1000,
  });
  const metadata = config.serverMetadata();
  check(metadata.issuer === issuer, `issuer ${metadata.issuer} != ${issuer}`);
  check(
    metadata.authorization_response_iss_parameter_supported === true,
    'discovery does not advertise authorization_response_iss_parameter_supported',
  );
  check(metadata.code_challenge_methods_supported?.includes('S256'), 'S256 not advertised');
  done('discovery');

  step = 'authorize';
  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const authResponse = await request(authUrl);
  check(
    [302, 303].includes(authResponse.status),
    `authorize answered ${authResponse.status}, expected a redirect to the login page`,
  );
  const loginUrl = location(authResponse, authUrl);
  check(loginUrl.origin === new URL(issuer).origin, `login page on another origin: ${loginUrl}`);
  done('authorize', { login_path: loginUrl.pathname });

  step = 'login_page';
  const page = await request(loginUrl);
  check(page.status === 200, `login page answered ${page.status}`);
  let form = parseForm(await page.text(), loginUrl);
  done('login_page', { cookies: [...jar.keys()].sort() });

  step = 'wrong_password';
  const wrong = await postLogin(form, email, `${password}-wrong`);
  check(
    [200, 400, 401].includes(wrong.status),
    `a wrong password answered ${wrong.status}, expected the form again (200/400/401)`,
  );
  check(/html/i.test(wrong.headers.get('content-type') || ''), 'wrong password: not an HTML page');
  form = parseForm(await wrong.text(), loginUrl);
  done('wrong_password', { wrong_password_status: wrong.status });

  step = 'login';
  let response = await postLogin(form, email, password);
  check(response.status === 303, `login POST answered ${response.status}, expected 303`);
  let next = location(response, form.action);
  // Follow our own server's redirects (if any) until the app's redirect_uri; answer a
  // second-factor step when the user has an authenticator app.
  for (let hops = 0; !next.href.startsWith(redirectUri); hops += 1) {
    check(hops < 5, 'too many redirects after login');
    check(next.origin === new URL(issuer).origin, `redirected to an unexpected place: ${next}`);
    if (next.pathname === '/flow/totp') {
      check(process.env.TOTP_SECRET, 'the server asks for a TOTP code but TOTP_SECRET is unset');
      step = 'totp';
      response = await answerTotp(next, process.env.TOTP_SECRET);
      done('totp', { totp_path: next.pathname });
      step = 'login';
      next = location(response, next);
      continue;
    }
    response = await request(next);
    check([302, 303].includes(response.status), `${next.pathname} answered ${response.status}`);
    next = location(response, next);
  }
  const callback = next;
  check(callback.searchParams.get('state') === state, 'state missing or changed on the callback');
  check(callback.searchParams.get('iss') === issuer, 'RFC 9207 iss missing or wrong on the callback');
  check(callback.searchParams.has('code'), 'no code on the callback');
  done('login', { callback_params: [...callback.searchParams.keys()].sort() });

  step = 'authorization_code_grant';
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  check(tokens.token_type.toLowerCase() === 'bearer', `token_type ${tokens.token_type}`);
  check(tokens.access_token, 'no access_token');
  check(tokens.refresh_token, 'no refresh_token despite offline_access');
  const idClaims = tokens.claims();
  check(idClaims?.sub, 'ID token without sub');
  check(idClaims.nonce === nonce, 'ID token nonce mismatch');
  const sub = idClaims.sub;
  const refreshToken = tokens.refresh_token;
  done('authorization_code_grant', {
    sub,
    expires_in: tokens.expires_in,
    id_token_aud: idClaims.aud,
    id_token_has_sid: typeof idClaims.sid === 'string',
    id_token_amr: idClaims.amr ?? null,
  });

  step = 'refresh_token_grant';
  const refreshed = await client.refreshTokenGrant(config, refreshToken);
  check(refreshed.access_token, 'refresh gave no access_token');
  check(refreshed.access_token !== tokens.access_token, 'refresh returned the same access token');
  done('refresh_token_grant', { refresh_rotated: Boolean(refreshed.refresh_token) });
  const currentRefreshToken = refreshed.refresh_token || refreshToken;

  step = 'userinfo';
  const userinfo = await client.fetchUserInfo(config, refreshed.access_token, sub);
  check(userinfo.sub === sub, 'userinfo sub mismatch');
  done('userinfo', { userinfo_email: userinfo.email ?? null });

  step = 'revocation';
  await client.tokenRevocation(config, currentRefreshToken);
  done('revocation');

  step = 'refresh_after_revocation';
  try {
    await client.refreshTokenGrant(config, currentRefreshToken);
    throw new Error('refresh after revocation succeeded');
  } catch (e) {
    if (!(e instanceof client.ResponseBodyError)) throw e;
    check(e.error === 'invalid_grant', `refresh after revocation: ${e.error}, want invalid_grant`);
    done('refresh_after_revocation', { refresh_after_revocation_error: e.error });
  }

  step = 'userinfo_after_revocation';
  try {
    await client.fetchUserInfo(config, refreshed.access_token, sub);
    throw new Error('userinfo accepted an access token of a revoked grant');
  } catch (e) {
    if (!(e instanceof client.WWWAuthenticateChallengeError)) throw e;
    done('userinfo_after_revocation', { userinfo_after_revocation_status: e.response?.status });
  }

  result.ok = true;
}

try {
  await main();
} catch (e) {
  result.step = step;
  result.error = `${e?.name ?? 'Error'}: ${e?.message ?? e}`;
  if (e?.error) result.oauth_error = e.error;
  if (e?.error_description) result.oauth_error_description = e.error_description;
  if (e?.status) result.http_status = e.status;
  if (e?.cause instanceof Error) {
    result.cause = `${e.cause.name}: ${e.cause.message}`;
  } else if (e?.cause) {
    try {
      result.cause = JSON.parse(JSON.stringify(e.cause));
    } catch {
      // not serialisable: leave it out
    }
  }
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exitCode = result.ok ? 0 : 1;
