"""The documented imports are typed for an application's type checker (issue 17.2): mypy
(strict, and no expression of type Any) and pyright (strict) check a small app in
``typing_app/`` against this tree's ``src``, with ``assert_type`` on what the SDK returns; a
coroutine method called without ``await`` must be flagged by both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import authgear

SAMPLES = Path(__file__).parent / "typing_app"
SRC = Path(authgear.__file__).resolve().parents[1]  # the tree under test, not an install

MYPY_INI = """\
[mypy]
strict = True
disallow_any_expr = True
warn_return_any = True

[mypy-authgear.*]
follow_imports = silent
"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("typing_app")
    for sample in ("app.py", "forgot_await.py"):
        shutil.copy(SAMPLES / sample, d / sample)
    (d / "mypy.ini").write_text(MYPY_INI)
    (d / "pyrightconfig.json").write_text(
        json.dumps(
            {
                "include": ["app.py", "forgot_await.py"],
                "extraPaths": [str(SRC)],
                "typeCheckingMode": "strict",
                "pythonVersion": "3.11",
            }
        )
    )
    return d


def test_mypy_sees_types_not_any_and_flags_a_missing_await(app_dir: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--cache-dir",
            str(app_dir / ".mypy_cache"),
            "app.py",
            "forgot_await.py",
        ],
        cwd=app_dir,
        env=dict(os.environ, MYPYPATH=str(SRC)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert [e for e in errors if e.startswith("app.py")] == [], r.stdout
    assert len(errors) == 1 and errors[0].startswith("forgot_await.py:8:"), r.stdout
    assert "[unused-coroutine]" in errors[0]


def test_pyright_sees_types_not_any_and_flags_a_missing_await(app_dir: Path) -> None:
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent))
    assert pyright, "pyright is a dev dependency: pip install pyright"
    r = subprocess.run(
        [pyright, "--pythonpath", sys.executable, "--outputjson"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(r.stdout)
    found = [
        (Path(d["file"]).name, d["range"]["start"]["line"] + 1, d.get("rule"), d["message"])
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert [f for f in found if f[0] == "app.py"] == []
    assert [f[:3] for f in found] == [("forgot_await.py", 8, "reportUnusedCoroutine")], found


def test_top_level_and_client_export_the_same_names() -> None:
    import authgear.client

    assert set(authgear.__all__) == set(authgear.client.__all__) | {"__version__"}
    for name in authgear.client.__all__:
        assert getattr(authgear, name) is getattr(authgear.client, name)


def test_import_authgear_still_loads_the_sdk_only_when_used() -> None:
    code = (
        "import sys, authgear\n"
        "assert 'authgear.client' not in sys.modules\n"
        "authgear.Authgear\n"
        "assert 'authgear.client' in sys.modules and 'authgear.server' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
