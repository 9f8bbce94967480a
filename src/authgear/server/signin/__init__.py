"""Sign-in as a flow of steps (docs/decisions.md "Sign-in is a flow of steps", docs/server.md).

- ``flow``: the flow record (starter, intent, user, steps done, step state) and its binding to
  the browser;
- ``policy`` (pure): which step is next, from the flow and the facts about the user;
- ``steps/``: one module per step (show + submit; options for a browser ceremony);
- ``engine``: the pages; loads, checks, runs a step, saves (compare-and-set), moves on;
- ``finish``: creates or refreshes the browser session and hands back to the starter;
- ``amr`` (pure): Authgear's amr values and rules; ``attempts``: the shared guess limits;
- ``settings_page``: /settings/security, whose add actions are flows too;
- ``routes``: every route above, for the app.
"""
