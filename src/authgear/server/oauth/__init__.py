"""OAuth 2.0 protocol pieces the endpoints share, one module per specification (Authlib's
separation): client authentication (RFC 6749 §2.3) and PKCE (RFC 7636)."""
