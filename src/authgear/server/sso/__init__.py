"""Upstream identity providers: sign in with another OpenID Connect or OAuth 2.0 provider
(issue 15; accounts spec §8). ``config`` (the ``identity_providers:`` settings), ``rp`` (the
relying party's pure checks), ``client`` (discovery, JWKS and the token exchange over HTTP),
the ``sso`` sign-in step (signin/steps/sso.py) and ``routes`` (the callback)."""
