// A tiny single-page app that uses the official Authgear web SDK (@authgear/web, the IIFE bundle
// it ships: global `authgear`) the way Authgear's docs for SPAs do, with sessionType
// "refresh_token". index.html has the sign-in buttons; callback.html is the redirect URI and calls
// finishAuthentication(). window.app exposes every SDK call for the test; each async helper
// resolves to {ok: true, value} or {ok: false, error}, so a failure is data, not an exception.
// window.APP_CONFIG comes from /config.js, written by the test's web server.
(function () {
  "use strict";

  const config = window.APP_CONFIG;
  const sdk = window.authgear;
  const container = sdk.default;

  const app = {
    // Every session state change the SDK reports in this page load: {state, reason}.
    events: [],
    // Set once configure() (and, on callback.html, finishAuthentication()) has settled.
    ready: false,
    configureResult: null,
    finishResult: null,
    // What the last sign-in button click's startAuthentication() gave (it normally navigates away).
    signInResult: null,
  };

  function show() {
    const el = document.getElementById("state");
    if (el) el.textContent = container.sessionState;
  }

  container.delegate = {
    onSessionStateChange(c, reason) {
      app.events.push({ state: c.sessionState, reason: reason });
      show();
    },
  };

  function describe(e) {
    return {
      oauthError: e instanceof sdk.OAuthError,
      serverError: e instanceof sdk.ServerError,
      authgearError: e instanceof sdk.AuthgearError,
      error: e && e.error,
      error_description: e && e.error_description,
      message: String((e && e.message) || e),
    };
  }

  async function run(fn) {
    try {
      return { ok: true, value: await fn() };
    } catch (e) {
      return { ok: false, error: describe(e) };
    }
  }

  function userInfo(u) {
    return {
      sub: u.sub,
      email: u.email,
      emailVerified: u.emailVerified,
      isVerified: u.isVerified,
      isAnonymous: u.isAnonymous,
      canReauthenticate: u.canReauthenticate,
      roles: u.roles,
      customAttributes: u.customAttributes,
    };
  }

  app.sessionState = () => container.sessionState;
  app.accessToken = () => container.accessToken || null;

  app.signIn = (page) =>
    run(() => container.startAuthentication({ redirectURI: config.redirectURI, page: page }));

  app.fetchUserInfo = () => run(async () => userInfo(await container.fetchUserInfo()));

  app.refreshAccessTokenIfNeeded = () =>
    run(async () => {
      await container.refreshAccessTokenIfNeeded();
      return container.accessToken || null;
    });

  // authgear.fetch() to our backend: it adds "Authorization: Bearer <access token>".
  app.callBackend = () =>
    run(async () => {
      const response = await container.fetch(config.backendURL);
      return { status: response.status, body: await response.json() };
    });

  app.logout = () => run(() => container.logout({ redirectURI: config.postLogoutRedirectURI }));

  async function start() {
    app.configureResult = await run(() =>
      container.configure({
        clientID: config.clientID,
        endpoint: config.endpoint,
        sessionType: "refresh_token",
      })
    );
    show();
    if (location.pathname === "/callback.html") {
      app.finishResult = await run(async () => {
        const result = await container.finishAuthentication();
        return { state: result.state || null, userInfo: userInfo(result.userInfo) };
      });
      document.getElementById("result").textContent = app.finishResult.ok
        ? "Signed in as " + app.finishResult.value.userInfo.email
        : "Failed: " + app.finishResult.error.message;
    }
    app.ready = true;
  }

  window.app = app;
  document.addEventListener("DOMContentLoaded", () => {
    for (const [id, page] of [["sign-in", "login"], ["sign-up", "signup"]]) {
      const button = document.getElementById(id);
      if (button) {
        button.addEventListener("click", async () => {
          app.signInResult = await app.signIn(page);
        });
      }
    }
    start();
  });
})();
