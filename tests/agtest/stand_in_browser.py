"""A stand-in for the system browser, named in webbrowser's ``BROWSER`` variable, so code that
calls ``authgear.authenticate()`` as written (the README's story) signs in without a screen.

``webbrowser`` waits for the command to exit, while the SDK answers the redirect only after
``webbrowser.open`` returns: so this process starts a detached copy of itself and exits at once;
the copy walks the login page like a person (``agtest.server.Browser``) with the credentials in
``STAND_IN_EMAIL`` / ``STAND_IN_PASSWORD`` and follows the redirect to the app's loopback port.
What happened is appended to ``STAND_IN_LOG`` (no secrets: status codes and paths only).
"""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

CHILD = "_STAND_IN_BROWSER_CHILD"


def _note(line: str) -> None:
    with open(os.environ["STAND_IN_LOG"], "a") as f:
        f.write(line + "\n")


def _sign_in(url: str) -> None:
    from agtest.server import Browser

    parts = urlsplit(url)
    browser = Browser(f"{parts.scheme}://{parts.netloc}")
    try:
        r = browser.http.get(url)
        _note(f"authorize {r.status_code}")
        location = r.headers.get("location", "")
        if location.startswith("/"):
            r = browser.submit(
                location, os.environ["STAND_IN_EMAIL"], os.environ["STAND_IN_PASSWORD"]
            )
            _note(f"login {r.status_code}")
        callback = r.headers["location"]
        r = browser.http.get(callback)
        _note(f"callback {urlsplit(callback).path} {r.status_code}")
    except Exception as e:  # the test reads the log and fails with this line
        _note(f"error {type(e).__name__}: {e}")
    finally:
        browser.close()


def main() -> int:
    url = sys.argv[1]
    if os.environ.get(CHILD) != "1":
        subprocess.Popen(
            [sys.executable, __file__, url],
            env={**os.environ, CHILD: "1"},
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        return 0
    _sign_in(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
