"""The official `openai` package as the client of /openai/v1, over real HTTP against a
server that generates: url and b64_json answers (the images decoded and measured), n=2
(two tasks, two charges), the models list, and the errors the package raises for a bad
size or n, a bad key and a prompt the moderation refuses."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from kreaserve import contract, ledger
from kreaserve.db.models import LedgerEntry
from tests.conftest import Server
from tests.integration.test_moderation_api import first

PROMPT = "a lighthouse on a cliff at dawn"


def client(server: Server, key: str) -> openai.OpenAI:
    # No retries: a test must see each answer as the server gave it.
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=key, max_retries=0)


def reservations(server: Server, account_id: int) -> int:
    with server.database().read() as session:
        return (
            session.query(LedgerEntry)
            .filter(LedgerEntry.account_id == account_id, LedgerEntry.kind == "reserve")
            .count()
        )


def test_url_answer_links_to_the_image_of_the_mapped_size(full_server: Server) -> None:
    account_id, key = full_server.account(credits=10)
    with client(full_server, key) as api:
        answer = api.images.generate(model=contract.MODEL, prompt=PROMPT, size="1024x1024")
    assert answer.created > 0 and answer.data and len(answer.data) == 1
    url = answer.data[0].url
    assert url and url.startswith(full_server.url + "/files/")
    image = Image.open(io.BytesIO(httpx.get(url, timeout=30).content))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert reservations(full_server, account_id) == 1


def test_b64_json_webp_with_n_2_is_two_images_and_two_charges(full_server: Server) -> None:
    account_id, key = full_server.account(credits=10)
    with client(full_server, key) as api:
        answer = api.images.generate(
            model=contract.MODEL,
            prompt=PROMPT,
            n=2,
            size="1792x1024",  # DALL-E 3's wide size: 16:9, 1K
            response_format="b64_json",
            output_format="webp",
            output_compression=80,
            quality="hd",  # ignored: the size decides the tier
            style="vivid",
            user="end-user-7",
        )
    assert answer.data is not None and len(answer.data) == 2
    for item in answer.data:
        assert item.b64_json and item.url is None
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert (image.format, image.size) == ("WEBP", contract.PIXELS[("16:9", "1K")])
    assert reservations(full_server, account_id) == 2
    with full_server.client(key) as http:
        credits = http.get("/v1/credits").json()
    assert credits["balance"] == pytest.approx(10 - 2 * ledger.to_credits(ledger.to_units(0.45)))


def test_the_models_list_names_the_model(full_server: Server) -> None:
    with client(full_server, full_server.key()) as api:
        assert [model.id for model in api.models.list()] == [contract.MODEL]


@pytest.mark.parametrize(
    ("options", "param"),
    [({"size": "3000x1000"}, "size"), ({"size": "big"}, "size"), ({"n": 5}, "n")],
)
def test_bad_size_or_n_is_a_bad_request_naming_it(
    full_server: Server, options: dict, param: str
) -> None:
    account_id, key = full_server.account(credits=10)
    with client(full_server, key) as api, pytest.raises(openai.BadRequestError) as caught:
        api.images.generate(model=contract.MODEL, prompt=PROMPT, **options)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert reservations(full_server, account_id) == 0


def test_a_bad_key_is_an_authentication_error(full_server: Server) -> None:
    with client(full_server, "ks_wrong") as api, pytest.raises(openai.AuthenticationError) as e:
        api.images.generate(model=contract.MODEL, prompt=PROMPT)
    assert e.value.code == "invalid_api_key"


def test_a_refused_prompt_is_a_content_policy_error_and_charges_nothing(
    full_server: Server,
) -> None:
    account_id, key = full_server.account(credits=10)
    with client(full_server, key) as api, pytest.raises(openai.BadRequestError) as caught:
        api.images.generate(model=contract.MODEL, prompt=first("sexual_minors"), n=2)
    assert caught.value.code == "content_policy_violation"
    assert reservations(full_server, account_id) == 0
