"""A separate process for the multi-process tests: python client_worker.py MODE ..."""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

from authgear import Authgear
from authgear.client import FileTokenStorage, StoredSession


def main() -> None:
    mode = sys.argv[1]
    if mode == "crash-writer":
        storage = FileTokenStorage(sys.argv[2])
        i = 0
        while True:
            storage.save(
                "worker",
                StoredSession(
                    refresh_token=f"rt-{i}-" + secrets.token_hex(8 + i % 300),
                    access_token="at-" + secrets.token_hex(32 + i % 500),
                    expires_at=time.time() + 3600,
                    refresh_after=time.time() + 3000,
                    id_token="id-" + secrets.token_hex(i % 700),
                ),
            )
            if i == 0:
                print("ready", flush=True)
            i += 1

    issuer, client_id, store_dir = sys.argv[2], sys.argv[3], sys.argv[4]
    ag = Authgear(client_id, issuer, token_storage=FileTokenStorage(store_dir))
    ag.configure()
    if mode == "refresh-once":
        go = Path(sys.argv[5])
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.005)
        token = ag.refresh_access_token_if_needed()
        print(json.dumps({"token": token, "state": ag.session_state.value}), flush=True)
    elif mode == "rotate-loop":
        n = int(sys.argv[5])
        for _ in range(n):
            ag.refresh_access_token()
        info = ag.fetch_user_info()
        print(json.dumps({"sub": info.sub, "state": ag.session_state.value}), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
