"""Moderation through the service over real HTTP: prompts refused at creation with the
category (never the word) and nothing stored or reserved; nsfw_check adds the strict
categories; images over the threshold are withheld by the worker and the task fails."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kreaserve.moderation import category_text
from tests.conftest import Server
from tests.integration.test_api_contract import GOOD, assert_error
from tests.integration.test_generation import wait_until_done

EVAL = Path(__file__).resolve().parents[2] / "kreaserve/moderation/data/eval_prompts.jsonl"
PROMPTS = [json.loads(line) for line in EVAL.read_text().splitlines() if line.strip()]


def first(label: str, kind: str = "plain") -> str:
    return next(p["prompt"] for p in PROMPTS if p["label"] == label and p["kind"] == kind)


def count_tasks(server: Server, key: str) -> int:
    """The tasks of `key`'s account (the server is shared with the run's other tests)."""
    with server.client(key) as client:
        listed = client.get("/v1/tasks", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    return len(listed.json()["data"])


@pytest.mark.parametrize("category", ["sexual_minors", "sexual_violence", "real_person_sexual"])
def test_basic_categories_are_refused_on_every_prompt(api_server: Server, category: str) -> None:
    prompt = first(category)
    key = api_server.key(credits=5)
    with api_server.client(key) as client:
        for nsfw_check in (False, True):
            error = assert_error(
                client.post(
                    "/v1/images/generations",
                    json={**GOOD, "prompt": prompt, "nsfw_check": nsfw_check},
                ),
                400,
                "invalid_request_error",
                "content_policy_violation",
                "prompt",
            )
            assert category_text(category) in error["message"]
            assert not {w for w in prompt.lower().split() if len(w) > 3} & set(
                error["message"].lower().replace(".", "").replace(":", "").split()
            )
        assert client.get("/v1/credits").json()["reserved"] == 0
    assert count_tasks(api_server, key) == 0


@pytest.mark.parametrize("category", ["explicit_sexual", "graphic_gore"])
def test_nsfw_check_adds_the_strict_categories(api_server: Server, category: str) -> None:
    prompt = first(category)
    with api_server.client(api_server.key()) as client:
        allowed = client.post("/v1/images/generations", json={**GOOD, "prompt": prompt})
        assert allowed.status_code == 200, allowed.text
        error = assert_error(
            client.post(
                "/v1/images/generations", json={**GOOD, "prompt": prompt, "nsfw_check": True}
            ),
            400,
            "invalid_request_error",
            "content_policy_violation",
            "prompt",
        )
    assert category_text(category) in error["message"]


@pytest.mark.parametrize(
    "prompt",
    [
        "breast cancer awareness poster",
        "chicken breast recipe",
        "nude colour palette",
        "a shot of espresso",
        "killer whale",
        "Shoot the moon album cover",
    ],
)
def test_hard_negatives_pass_in_both_modes(api_server: Server, prompt: str) -> None:
    with api_server.client(api_server.key()) as client:
        for nsfw_check in (False, True):
            response = client.post(
                "/v1/images/generations", json={**GOOD, "prompt": prompt, "nsfw_check": nsfw_check}
            )
            assert response.status_code == 200, (prompt, nsfw_check, response.text)


def test_decisions_are_logged_with_category_and_score_never_the_prompt(api_server: Server) -> None:
    prompt = first("sexual_violence")
    with api_server.client(api_server.key()) as client:
        client.post("/v1/images/generations", json={**GOOD, "prompt": prompt})
    deadline = time.monotonic() + 5
    while "sexual_violence" not in (logs := api_server.api.output()):
        assert time.monotonic() < deadline, "no moderation decision in the log"
        time.sleep(0.1)
    line = next(line for line in logs.splitlines() if "sexual_violence" in line)
    assert "score" in line.lower()
    assert prompt not in logs


def test_an_image_over_the_threshold_is_withheld_and_the_task_fails(full_server: Server) -> None:
    """The shared generating server's image threshold is below what noise images score
    (FULL_SERVER_ENV)."""
    server = full_server
    with server.client(server.key(credits=2)) as client:
        checked = client.post("/v1/images/generations", json={**GOOD, "nsfw_check": True}).json()
        unchecked = client.post("/v1/images/generations", json=GOOD).json()
        failed = wait_until_done(client, checked["id"])[-1]
        done = wait_until_done(client, unchecked["id"])[-1]
        credits = client.get("/v1/credits").json()
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "content_policy_violation"
    assert "withheld by content moderation" in failed["error"]["message"]
    assert "results" not in failed
    assert not (server.data_dir / "images" / checked["id"]).exists()  # never stored
    assert done["status"] == "completed"  # without nsfw_check the image is not classified
    assert credits["balance"] == 1.55 and credits["reserved"] == 0  # only one charged
