"""GET /files/<key>: result images behind HMAC-signed, expiring URLs (no API key needed)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import FileResponse

from kreaserve.api.deps import ServicesDep
from kreaserve.api.errors import APIError
from kreaserve.storage import signing

router = APIRouter()


@router.get("/files/{key:path}")
def get_file(key: str, services: ServicesDep, expires: str = "",
             signature: str = "") -> FileResponse:
    """403 when the signature does not match, 410 once expired, 404 when the file is gone."""
    well_formed = (expires.isascii() and expires.isdigit() and len(expires) <= 12
                   and signature.isascii() and 0 < len(signature) <= 128)
    if not well_formed or not signing.verify(services.url_secret, key, int(expires), signature):
        raise APIError(403, "invalid_signature", "This URL's signature is not valid.")
    if int(expires) < time.time():
        raise APIError(410, "url_expired",
                       "This result URL has expired; results are kept for 24 hours.")
    try:
        path = services.storage.path(key)
    except ValueError:
        path = None
    if path is None:
        raise APIError(404, "file_not_found", "This result file no longer exists.")
    remaining = max(0, int(expires) - int(time.time()))
    return FileResponse(path, media_type="image/png",
                        headers={"Cache-Control": f"private, max-age={remaining}"})
