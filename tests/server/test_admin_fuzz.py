"""schemathesis against the admin API's own OpenAPI document: no generated input, valid or
invalid (schemathesis's positive and negative modes), gets a 500, with a key or without.
Bounded examples per operation so the whole run stays well under a minute.

(schemathesis's pytest integration does not work with pytest 9, so its Hypothesis strategies
are driven directly.)"""

from __future__ import annotations

import subprocess

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from agtest.server import AUTHGEAR, ServerProcess

# Request validation and error shapes, not storage: SQLite only (tests/conftest.py).
STORAGES = ("sqlite",)

OPERATIONS = [
    "GET /users",
    "POST /users",
    "GET /users/{user_id}",
    "DELETE /users/{user_id}",
    "POST /users/{user_id}/disable",
    "POST /users/{user_id}/enable",
    "PUT /users/{user_id}/roles",
    "GET /users/{user_id}/sessions",
    "DELETE /users/{user_id}/sessions",
    "POST /users/{user_id}/send-reset",
    "POST /users/{user_id}/mark-verified",
    "POST /users/{user_id}/mark-unverified",
    "PUT /users/{user_id}/password",
    "GET /users/{user_id}/authenticators",
    "POST /users/{user_id}/reset-mfa",
    "DELETE /users/{user_id}/passkeys/{authenticator_id}",
    "GET /users/{user_id}/identities",
    "DELETE /users/{user_id}/identities/{identity_id}",
    "GET /sessions/{session_id}",
    "DELETE /sessions/{session_id}",
    "GET /audit-log",
]


@pytest.fixture(scope="module")
def admin_key(authgear_server: ServerProcess) -> str:
    out = subprocess.run(
        [AUTHGEAR, "admin", "keys", "create", "--data-dir", str(authgear_server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def admin_openapi(authgear_server: ServerProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(authgear_server.url + "/_api/admin/openapi.json")


def test_every_operation_is_fuzzed(admin_openapi: schemathesis.BaseSchema) -> None:
    labels = {op.ok().label for op in admin_openapi.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_server_error(
    label: str,
    admin_openapi: schemathesis.BaseSchema,
    authgear_server: ServerProcess,
    admin_key: str,
) -> None:
    operation = admin_openapi.find_operation_by_label(label)
    assert operation is not None
    base = authgear_server.url + "/_api/admin"
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        # With a valid key the handlers run; without one it is 401 before any parsing.
        case.call_and_validate(
            base_url=base,
            headers={"Authorization": f"Bearer {admin_key}"},
            checks=[not_a_server_error],
        )
        response = case.call(base_url=base, headers={"Authorization": "Bearer agk_x.y"})
        assert response.status_code in (401, 404, 405), response.text[:200]

    run()
