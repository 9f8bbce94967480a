// Passkey ceremonies (WebAuthn), the only script of the pages (CSP script-src 'self').
// A form[data-passkey] ("get" or "create") asks the server for options (POST, CSRF token),
// runs navigator.credentials.get/create, puts the credential (JSON) in the form and submits it
// like any other form: the server answers with the next page. With data-conditional="true" a
// "get" also runs as conditional UI (passkeys offered in the email field's autofill).
'use strict';
(() => {
  const form = document.querySelector('form[data-passkey]');
  if (!form || !window.PublicKeyCredential || !navigator.credentials) return;
  form.hidden = false;
  const mode = form.dataset.passkey;
  const errorBox = form.querySelector('[data-passkey-error]');
  const button = form.querySelector('[data-passkey-start]');
  let pending = null;

  const toBytes = (s) => {
    const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  };
  const toB64url = (buf) => {
    let text = '';
    for (const byte of new Uint8Array(buf)) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };
  const descriptors = (list) => (list || []).map((d) => ({ ...d, id: toBytes(d.id) }));

  function requestOptions(pk) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(pk);
    }
    return { ...pk, challenge: toBytes(pk.challenge), allowCredentials: descriptors(pk.allowCredentials) };
  }

  function creationOptions(pk) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(pk);
    }
    return {
      ...pk,
      challenge: toBytes(pk.challenge),
      user: { ...pk.user, id: toBytes(pk.user.id) },
      excludeCredentials: descriptors(pk.excludeCredentials),
    };
  }

  function credentialJSON(cred) {
    if (typeof cred.toJSON === 'function') return cred.toJSON();
    const r = cred.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) response.userHandle = toB64url(r.userHandle);
    }
    return {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults(),
    };
  }

  function showError(message) {
    if (!errorBox) return;
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  async function fetchOptions() {
    const body = new URLSearchParams({
      csrf_token: form.elements.csrf_token.value,
      next: form.elements.next ? form.elements.next.value : '',
    });
    const response = await fetch(form.dataset.options, {
      method: 'POST',
      body,
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || 'Passkeys are not available right now.');
    // Later requests belong to the flow this one started or continued.
    form.dataset.options = data.action.replace(/\?/, '/options?');
    form.elements.csrf_token.value = data.csrf_token;
    return data;
  }

  function send(data, cred) {
    form.action = data.action;
    form.elements.credential.value = JSON.stringify(credentialJSON(cred));
    form.submit();
  }

  async function run(mediation) {
    const data = await fetchOptions();
    pending = new AbortController();
    const cred = mode === 'create'
      ? await navigator.credentials.create({ publicKey: creationOptions(data.publicKey), signal: pending.signal })
      : await navigator.credentials.get({ publicKey: requestOptions(data.publicKey), mediation, signal: pending.signal });
    if (cred) send(data, cred);
  }

  const failed = (e) => {
    if (e && e.name === 'AbortError') return;
    showError(e && e.name === 'NotAllowedError'
      ? 'The passkey request was cancelled or timed out. Try again.'
      : (e && e.message) || 'The passkey did not work. Try again.');
  };

  button.addEventListener('click', () => {
    if (pending) pending.abort();
    if (errorBox) errorBox.hidden = true;
    run(undefined).catch(failed);
  });

  if (mode === 'get' && form.dataset.conditional === 'true'
      && PublicKeyCredential.isConditionalMediationAvailable) {
    PublicKeyCredential.isConditionalMediationAvailable().then((ok) => {
      if (ok) run('conditional').catch((e) => { if (e && e.name !== 'AbortError') failed(e); });
    });
  }
})();
