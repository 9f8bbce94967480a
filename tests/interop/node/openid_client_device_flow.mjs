// Interop: npm openid-client v6 runs the device authorization grant (RFC 8628) against our server.
//
// Environment: ISSUER, CLIENT_ID, EXPECT ("tokens": the user approves; "access_denied": the user
// denies), optional SCOPE.
// Steps: discovery (device_authorization_endpoint advertised) -> initiateDeviceAuthorization ->
// pollDeviceAuthorizationGrant, which polls at the server's interval while the test, reading our
// stdout, enters the user code on /device as a signed-in person and approves or denies. With
// EXPECT=tokens: ID token claims, userinfo with the access token, and a refreshTokenGrant (a
// device's grant refreshes like any app session). With EXPECT=access_denied: the poll must end
// with openid-client's ResponseBodyError access_denied.
//
// Prints JSON lines: {"event":"device_authorization", user_code, ...} once the codes are issued
// (the test needs the user code to approve it; the device_code and tokens are never printed),
// {"event":"pending"} after the first authorization_pending answer, then ONE result line
// {"ok": true, ...} or {"ok": false, "step", "error", ...}; exits 1 on failure.
import * as client from 'openid-client';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required`);
  return value;
};

const HTTP_TIMEOUT_MS = 15_000;
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const result = { ok: false, steps: [], token_answers: [] };
let step = 'setup';

function done(name, details = {}) {
  result.steps.push(name);
  Object.assign(result, details);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

// Every answer of the token endpoint to a device_code poll, as openid-client received it: the
// test asserts it waited for authorization_pending and was never told to slow down.
function watchingFetch(tokenEndpoint) {
  let pendingSeen = false;
  return async (url, options) => {
    const response = await fetch(url, options);
    const body = options.body instanceof URLSearchParams ? options.body : null;
    if (url === tokenEndpoint && body?.get('grant_type') === DEVICE_GRANT) {
      let error = null;
      if (response.status !== 200) {
        error = (await response.clone().json().catch(() => ({}))).error ?? null;
      }
      result.token_answers.push(error ?? response.status);
      if (error === 'authorization_pending' && !pendingSeen) {
        pendingSeen = true;
        emit({ event: 'pending' });
      }
    }
    return response;
  };
}

async function main() {
  const issuer = env('ISSUER');
  const clientId = env('CLIENT_ID');
  const expect = env('EXPECT');
  check(['tokens', 'access_denied'].includes(expect), `EXPECT=${expect}`);
  const scope = process.env.SCOPE || 'openid offline_access https://authgear.com/scopes/full-access';

  step = 'discovery';
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), {
    execute: [client.allowInsecureRequests],
    timeout: HTTP_TIMEOUT_MS / 1000,
  });
  const metadata = config.serverMetadata();
  check(metadata.issuer === issuer, `issuer ${metadata.issuer} != ${issuer}`);
  check(metadata.device_authorization_endpoint, 'no device_authorization_endpoint in discovery');
  check(metadata.grant_types_supported?.includes(DEVICE_GRANT), 'device grant not advertised');
  config[client.customFetch] = watchingFetch(metadata.token_endpoint);
  done('discovery', { device_authorization_endpoint: metadata.device_authorization_endpoint });

  step = 'device_authorization';
  const deviceResponse = await client.initiateDeviceAuthorization(config, { scope });
  check(deviceResponse.device_code, 'no device_code');
  const { user_code, verification_uri, verification_uri_complete, expires_in, interval } =
    deviceResponse;
  done('device_authorization', { verification_uri, expires_in, interval });
  emit({
    event: 'device_authorization',
    user_code,
    verification_uri,
    verification_uri_complete,
    expires_in,
    interval,
  });

  step = 'poll';
  // Stops polling after 90 s (the test's own deadline is longer) rather than the code's 10 min.
  const signal = AbortSignal.timeout(90_000);
  let tokens;
  try {
    tokens = await client.pollDeviceAuthorizationGrant(config, deviceResponse, undefined, {
      signal,
    });
  } catch (e) {
    if (expect === 'access_denied' && e instanceof client.ResponseBodyError) {
      check(e.error === 'access_denied', `poll ended with ${e.error}, want access_denied`);
      done('poll', { poll_error: e.error, poll_error_status: e.status });
      result.ok = true;
      return;
    }
    throw e;
  }
  check(expect === 'tokens', 'the poll got tokens although the user denied');
  check(tokens.token_type.toLowerCase() === 'bearer', `token_type ${tokens.token_type}`);
  check(tokens.access_token, 'no access_token');
  const idClaims = tokens.claims();
  check(idClaims?.sub, 'no ID token, or one without sub');
  done('poll', {
    sub: idClaims.sub,
    id_token_aud: idClaims.aud,
    id_token_iss: idClaims.iss,
    id_token_amr: idClaims.amr ?? null,
    has_refresh_token: Boolean(tokens.refresh_token),
    scope: tokens.scope ?? null,
  });

  step = 'userinfo';
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub);
  done('userinfo', { userinfo_sub: userinfo.sub, userinfo_email: userinfo.email ?? null });

  step = 'refresh_token_grant';
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  check(refreshed.access_token, 'refresh gave no access_token');
  check(refreshed.access_token !== tokens.access_token, 'refresh returned the same access token');
  done('refresh_token_grant', { refreshed_sub: refreshed.claims()?.sub ?? null });

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
  if (e?.cause instanceof Error) result.cause = `${e.cause.name}: ${e.cause.message}`;
}
emit(result);
process.exitCode = result.ok ? 0 : 1;
