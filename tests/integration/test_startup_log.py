"""Start-up says each thing once, in lines a person can read."""

from __future__ import annotations

import httpx

from tests.conftest import Server


def test_start_up_says_each_thing_once(full_server: Server) -> None:
    body = httpx.get(f"{full_server.url}/readyz").text
    assert body.count("every image is noise") == 1
    logs = "\n".join(proc.output() for proc in [full_server.api, *full_server.workers])
    assert logs.count("every image is noise") == 1, logs[-4000:]
    ready = [line for line in logs.splitlines() if "engine ready in" in line]
    assert len(ready) == 1 and "weights tiny-random" in ready[0]
    assert "{" not in ready[0], ready[0]  # no raw dict
    assert "\r" not in logs and "it/s]" not in logs and "%|" not in logs  # no tqdm bars
    # Allowed prompts are logged at DEBUG only (refusals at WARNING: the run's other tests
    # share this server and send some).
    decisions = [line for line in logs.splitlines() if "moderation decision" in line]
    assert not [line for line in decisions if "allowed=False" not in line], decisions
