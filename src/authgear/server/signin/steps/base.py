"""What a step is: a name (its page is ``/flow/<name>``, the entry steps are ``/login`` and
``/signup``), a template, ``show`` (the template's values) and ``submit`` (the form's outcome).
A step with a browser ceremony also answers ``options`` (JSON); an ``auto`` step has no page
(the engine submits it as soon as the policy picks it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.signin.flow import LoginFlow
from authgear.server.signin.policy import Facts
from authgear.server.state import ServerState
from authgear.server.storage import Authenticator, User


@dataclass(slots=True)
class StepContext:
    state: ServerState
    request: Request
    flow: LoginFlow
    facts: Facts
    # The identified user (None before the entry step) and their authenticators.
    user: User | None
    authenticators: list[Authenticator] = field(default_factory=list)
    # The step's URL with this flow (what its form posts to).
    action: str = ""
    # Set by a step that changed the flow while showing it (the engine saves it).
    changed: bool = False

    def of_kind(self, kind: str) -> list[Authenticator]:
        return [a for a in self.authenticators if a.kind == kind]


@dataclass(frozen=True, slots=True)
class Done:
    """The step is complete: record it with these amr values and authenticator id."""

    amr: tuple[str, ...] = ()
    authenticator: str | None = None
    # An entry step's identified user.
    user: User | None = None


@dataclass(frozen=True, slots=True)
class Again:
    """Show the step again with an error."""

    error: str
    status: int = 400
    values: dict[str, Any] = field(default_factory=dict)


class Step:
    name: str = ""
    template: str = ""
    auto: bool = False
    # A browser ceremony (WebAuthn): the step answers options().
    ceremony: bool = False
    # Its form may post from an entry page before any flow is stored (/flow/<name>?next=):
    # the POST starts the flow.
    starts_flow: bool = False

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        return {}

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again | Response:
        raise NotImplementedError

    async def options(self, ctx: StepContext) -> dict[str, Any] | None:
        """JSON for a browser ceremony (None: this step has none)."""
        return None
