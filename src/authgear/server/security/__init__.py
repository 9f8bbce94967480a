"""Security primitives shared by the endpoints: redirect URI rules, login attempt limits and
CSRF tokens. Each module is pure (no I/O) so its rules can be tested on their own."""
