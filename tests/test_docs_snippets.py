"""The docs run as written (issue 17.7): every Python snippet in README.md and docs/*.md
compiles, and the README's story (configure, authenticate, fetch_user_info, fetch, the backend
snippet, a revocation) runs unchanged against a server started the README's way, with only the
placeholders replaced. The revocation part holds the README to what it promises for each
backend mode (issue 17.3): JWTVerifier keeps accepting the access token, ResolverClient
answers 401 at once and the SDK ends in NO_SESSION."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import yaml

from agtest.server import AUTHGEAR, free_port, new_email

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(path: Path, section: str | None = None) -> list[Snippet]:
    """The ```python blocks of a Markdown file, or of one ``## section`` of it."""
    text = path.read_text()
    start, end = 0, len(text)
    if section is not None:
        start = text.index(f"\n## {section}\n")
        following = text.find("\n## ", start + 1)
        end = following if following != -1 else end
    return [
        Snippet(path, text.count("\n", 0, m.start()) + 2, m.group(1))
        for m in FENCE.finditer(text, start, end)
    ]


ALL = [s for path in DOCS for s in snippets(path)]


def test_the_docs_have_python_snippets_to_check() -> None:
    assert len(ALL) >= 20
    assert len(snippets(ROOT / "README.md", "The story in Python")) == 5


@pytest.mark.parametrize("snippet", ALL, ids=str)
def test_every_python_snippet_in_the_docs_compiles(snippet: Snippet) -> None:
    # Top-level await: the async examples are written as they read in an async function.
    compile(snippet.code, str(snippet), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def replaced(code: str, replacements: dict[str, str]) -> str:
    """Replace placeholders; each must be there, so a changed README fails here, loudly."""
    for old, new in replacements.items():
        assert old in code, f"the README no longer contains {old!r}"
        code = code.replace(old, new)
    return code


# -- the story against a live server ---------------------------------------------------------


@dataclass
class Started:
    url: str
    data_dir: Path
    native_client_id: str
    proc: subprocess.Popen[bytes]


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """`authgear serve` on a fresh data folder, as the quickstart runs it (a free port instead
    of 3000): the generated config and its client ids."""
    data = tmp_path_factory.mktemp("readme") / ".authgear"
    port = free_port()
    log = data.parent / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [AUTHGEAR, "serve", "--data-dir", str(data), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/.well-known/openid-configuration", proc, log)
    config = yaml.safe_load((data / "authgear.yaml").read_text())
    native = next(c["id"] for c in config["clients"] if c["id"].startswith("native-"))
    yield Started(url, data, native, proc)
    stop(proc)


def start_backend(code: str, folder: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """The README's FastAPI snippet as a module, under uvicorn on a free port."""
    folder.mkdir()
    (folder / "readme_backend.py").write_text(code)
    port = free_port()
    log = folder / "uvicorn.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "readme_backend:app", "--port", str(port)],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/openapi.json", proc, log)
    return url, proc


def run_story(code: str, home: Path, email: str, log: Path) -> dict[str, object]:
    """Run story code in a fresh interpreter as the user would: HOME is a temp folder (the SDK
    keeps its session there), and the "system browser" is tests/agtest/stand_in_browser.py."""
    browser = f"{sys.executable} {TESTS / 'agtest' / 'stand_in_browser.py'} %s"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "BROWSER": browser,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "STAND_IN_EMAIL": email,
        "STAND_IN_PASSWORD": PASSWORD,
        "STAND_IN_LOG": str(log),
    }
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    browsed = log.read_text() if log.exists() else "(no browser)"
    assert out.returncode == 0, (out.stderr[-3000:], browsed)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, object] = json.loads(line.removeprefix("RESULT "))
    result["stdout"] = out.stdout
    return result


REPORT = """
import json as _json
from pathlib import Path as _Path
_files = [p for p in _Path.home().rglob("*") if p.is_file() and "authgear" in str(p)]
print("RESULT " + _json.dumps({
    "state": authgear.session_state.name,
    "status": response.status_code,
    "body": response.json() if response.status_code == 200 else None,
    "modes": sorted({oct(p.stat().st_mode & 0o777) for p in _files}),
}))
"""


def test_readme_story_runs_as_written_against_a_live_server(
    readme_server: Started, tmp_path: Path
) -> None:
    server = readme_server
    email = new_email()
    subprocess.run(
        [
            AUTHGEAR,
            "users",
            "create",
            email,
            "--password-stdin",
            "--data-dir",
            str(server.data_dir),
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    backend_code = replaced(
        snippets(ROOT / "README.md", "Backend integration")[0].code,
        {'"http://127.0.0.1:3000"': repr(server.url)},
    )
    jwt_api, jwt_proc = start_backend(backend_code, tmp_path / "jwt")
    jwt_line = "auth = AuthgearDependencies(JWTVerifier("
    resolver_line = "auth = AuthgearDependencies(ResolverClient("
    resolver_code = replaced(
        backend_code, {jwt_line: "# " + jwt_line, "# " + resolver_line: resolver_line}
    )
    resolver_api, resolver_proc = start_backend(resolver_code, tmp_path / "resolver")
    try:
        configure, user_info, fetch, other_library, on_401 = (
            s.code for s in snippets(ROOT / "README.md", "The story in Python")
        )
        placeholders = {
            '"<YOUR_CLIENT_ID>"': repr(server.native_client_id),
            '"http://127.0.0.1:3000"': repr(server.url),
        }
        configure = replaced(configure, placeholders)
        home = tmp_path / "home"
        home.mkdir()

        # 1. The story: sign in through the (stand-in) browser, user info, call the backend.
        story = "\n".join(
            [
                configure,
                user_info,
                replaced(fetch, {'"https://api.example.com/me"': repr(jwt_api + "/api/me")}),
                other_library,
                on_401,
                REPORT,
            ]
        )
        first = run_story(story, home, email, tmp_path / "browser.log")
        assert "callback /oauth-redirect 200" in (tmp_path / "browser.log").read_text()
        assert first["state"] == "AUTHENTICATED"
        assert first["status"] == 200
        body = first["body"]
        assert isinstance(body, dict) and body["roles"] == []
        assert f" {email}\n" in str(first["stdout"])  # print(user.sub, user.email)
        assert first["modes"] == ["0o600"]  # the stored session: the owner only

        # 2. The session is revoked, as the README's session-management part does it.
        revoke = subprocess.run(
            [
                AUTHGEAR,
                "admin",
                "sessions",
                "revoke-all",
                email,
                "--data-dir",
                str(server.data_dir),
            ],
            capture_output=True,
            text=True,
        )
        assert revoke.returncode == 0, revoke.stderr
        assert revoke.stdout.startswith("revoked "), revoke.stdout

        # 3. A new run of the app: configure() finds the stored session (no browser this time).
        # A JWTVerifier backend still accepts the unexpired access token (what the README says) ...
        again = "\n".join(
            [
                configure,
                replaced(fetch, {'"https://api.example.com/me"': repr(jwt_api + "/api/me")}),
                on_401,
                REPORT,
            ]
        )
        jwt_mode = run_story(again, home, email, tmp_path / "browser2.log")
        assert not (tmp_path / "browser2.log").exists()
        assert (jwt_mode["status"], jwt_mode["state"]) == (200, "AUTHENTICATED")

        # ... a ResolverClient backend answers 401 at once; the SDK's refresh fails and the
        # README's 401 branch leaves NO_SESSION.
        resolver_mode = run_story(
            again.replace(jwt_api, resolver_api), home, email, tmp_path / "b3.log"
        )
        assert (resolver_mode["status"], resolver_mode["state"]) == (401, "NO_SESSION")
    finally:
        stop(jwt_proc)
        stop(resolver_proc)
