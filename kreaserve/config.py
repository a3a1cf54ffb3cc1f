"""Every knob of kreaserve in one place, read from KREASERVE_* environment variables.

The CLI's commands all build their settings here, so `kreaserve keys create` run
beside a server (same environment) writes to that server's database.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from kreaserve.config_engine import EngineSettings


class Settings(EngineSettings):
    """Runtime settings; each field is also the env var KREASERVE_<FIELD>. The engine's and
    worker's fields are in `EngineSettings`."""

    model_config = SettingsConfigDict(env_prefix="KREASERVE_", extra="ignore")

    # --- where things live -------------------------------------------------
    data_dir: Path = Field(
        default=Path("data"),
        description="Folder for the SQLite database, images, secrets and the weights cache.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/kreaserve.db. "
        "postgresql:// URLs use psycopg 3.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach this server at; result URLs are built on it. "
        "Default http://<host>:<port>.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where built weight presets (tiny-random) are kept; default "
        "~/.cache/kreaserve. Hugging Face downloads use the usual HF cache.",
    )
    secret_key: str | None = Field(
        default=None,
        description="HMAC key for signed result URLs. Default: on PostgreSQL, generated "
        "once into the database (every replica agrees); on SQLite, generated once into "
        "<data_dir>/secret.key.",
    )

    # --- S3 result storage (unset bucket: the local folder) ---------------------
    s3_bucket: str | None = Field(
        default=None,
        description="Store results in this S3-compatible bucket instead of "
        "<data_dir>/images; every API process and worker then needs no shared disk.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint (MinIO, R2, B2...); default AWS, or "
        "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.",
    )
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint clients reach the store at, when it differs "
        "from s3_endpoint_url (e.g. http://minio:9000 inside compose, a public host "
        "outside); result links are signed for it. Default s3_endpoint_url.",
    )
    s3_region: str | None = Field(
        default=None,
        description="Region of the bucket; default AWS_REGION / "
        "AWS_DEFAULT_REGION, else us-east-1.",
    )
    s3_access_key_id: str | None = Field(
        default=None,
        description="Access key; default the usual AWS chain "
        "(AWS_ACCESS_KEY_ID, ~/.aws, instance roles).",
    )
    s3_secret_access_key: str | None = Field(
        default=None, description="Secret of s3_access_key_id; default the AWS chain."
    )
    s3_prefix: str = Field(
        default="results/",
        description="Object name prefix of result images; the bucket "
        "lifecycle rule covers only this prefix.",
    )
    s3_addressing_style: str = Field(
        default="auto",
        pattern="^(auto|path|virtual)$",
        description="Bucket in the path "
        "(MinIO and most self-hosted stores) or in the host name: auto, path or virtual.",
    )
    s3_links: str = Field(
        default="direct",
        pattern="^(direct|redirect)$",
        description="direct: result URLs "
        "are presigned links to the store, ending when the result expires; redirect: "
        "/files/... URLs of the API that redirect to a presigned link of 5 minutes.",
    )
    s3_lifecycle: bool = Field(
        default=True,
        description="At start, add a bucket lifecycle rule deleting result "
        "objects a day after they expire (a backstop of the sweep; skipped with a warning "
        "where the store has none).",
    )

    # --- the HTTP server ---------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address `serve` binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `serve` binds to.")
    max_body_bytes: int = Field(default=1024 * 1024, description="Largest accepted request body.")
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A request's headers must arrive within this long of "
        "their first byte (or of the connection); a slower connection is closed.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A request's whole body must arrive within this long "
        "of its headers; a slower connection is closed.",
    )
    keep_alive_seconds: float = Field(
        default=5.0,
        gt=0,
        description="An idle keep-alive connection is closed after this long.",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections (or requests under way) per process "
        "beyond which new requests are answered 503.",
    )

    # --- results -----------------------------------------------------------
    result_ttl_seconds: int = Field(
        default=24 * 3600, gt=0, description="Result URLs work this long after completion."
    )
    sweep_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often expired result files are deleted."
    )

    # --- callbacks ---------------------------------------------------------
    callback_dispatch: bool = Field(
        default=True, description="`serve` sends the callbacks of ended tasks."
    )
    callback_allow_hosts: str = Field(
        default="",
        description="Comma-separated host names or addresses exempt from the "
        "internal-address rule, for test receivers only. Never set it in production.",
    )
    callback_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Callback attempts one `serve` process runs at "
        "once (each may wait up to 10 s for its receiver).",
    )
    callback_account_concurrency: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Most callback attempts of one account under "
        "way at once, over all senders: an account whose receivers hang cannot hold the "
        "slots other accounts' callbacks need.",
    )
    callback_redeliveries_per_minute: int = Field(
        default=10,
        ge=1,
        description="Redeliveries (POST .../callbacks/redeliver) one "
        "account may queue per minute (429 with Retry-After beyond).",
    )

    # --- moderation --------------------------------------------------------
    moderation_basic_categories: str = Field(
        default="sexual_minors,sexual_violence,real_person_sexual",
        description="Categories refused on every prompt (comma-separated).",
    )
    moderation_strict_categories: str = Field(
        default="explicit_sexual,graphic_gore",
        description="Categories added when a task asks for nsfw_check.",
    )
    moderation_basic_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Score that refuses a prompt."
    )
    moderation_strict_threshold: float = Field(
        default=0.4, ge=0, le=1, description="Score that refuses a prompt under nsfw_check."
    )
    moderation_image_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="open_nsfw score that withholds an image under nsfw_check.",
    )
    moderation_extra_terms: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The operator's own terms by category, as JSON: "
        '{"explicit_sexual": ["..."], "my_brand_policy": ["..."]}.',
    )
    moderation_log_prompts: bool = Field(
        default=False,
        description="Log the prompt text of moderation decisions "
        "(category and score are always logged).",
    )

    # --- billing -----------------------------------------------------------
    price_1k: float = Field(default=0.45, ge=0, description="Credits for one 1K image.")
    price_2k: float = Field(default=1.8, ge=0, description="Credits for one 2K image.")
    prices: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict,
        description='Prices by model, user group and tier, as JSON: {"krea-2-turbo": {"pro": '
        '{"1K": 0.4, "2K": 1.6}}}. Anything not listed costs price_1k / price_2k.',
    )

    # --- accounts and limits -------------------------------------------------
    admin_token: str | None = Field(
        default=None,
        description="Bearer token of the admin API (/admin/v1); unset: the admin API answers 404.",
    )
    requests_per_minute: int = Field(
        default=600,
        ge=1,
        description="Default request limit per minute of an account (all its keys together).",
    )
    max_tasks_in_flight: int = Field(
        default=100,
        ge=1,
        description="Default limit of an account's pending + processing "
        "tasks (all its keys together).",
    )
    max_keys_per_account: int = Field(
        default=10,
        ge=1,
        description="Most live keys an account may hold when it creates "
        "keys for itself (POST /v1/keys); operators are not bound by it.",
    )
    key_creates_per_minute: int = Field(
        default=10,
        ge=1,
        description="Keys an account may create or rotate per minute through /v1/keys.",
    )
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=10,
        description="How long an API process trusts what it read "
        "about a key: a key revoked (or an account changed) through another process stops "
        "working here within this many seconds; through this process, at once.",
    )
    create_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Creates one API process moderates and inserts at once; the "
        "rest wait their turn in arrival order. The classifier is CPU work, and on a small "
        "machine more threads only contend for the GIL and the database, which lengthens "
        "the slowest answers; raise it for a database far away (each create waits for "
        "about five round trips) or a machine with more cores.",
    )
    openai_wait_seconds: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="How long POST /openai/v1/images/generations waits for its images "
        "before answering an error that names the tasks (which go on and are charged).",
    )

    # --- observability -------------------------------------------------------
    log_format: str = Field(
        default="text",
        pattern="^(text|json)$",
        description="text (one readable line per "
        "event) or json (one JSON object per line, for log collectors).",
    )
    log_level: str = Field(
        default="INFO",
        pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="Least severe level logged: DEBUG, INFO, WARNING or ERROR.",
    )
    tracing: str = Field(
        default="off",
        pattern="^(off|otlp|console)$",
        description="OpenTelemetry spans of "
        "requests and callbacks: off, otlp (to OTEL_EXPORTER_OTLP_ENDPOINT) or console; "
        "needs pip install 'kreaserve[otel]'.",
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token GET /metrics requires; unset: /metrics is "
        "open (restrict it at your proxy).",
    )

    def price(self, model: str, user_group: str, quality: str) -> float:
        """Credits of one image: the model's price for the group, else the tier default."""
        by_group = self.prices.get(model, {})
        for group in (user_group, "default"):
            if quality in by_group.get(group, {}):
                return by_group[group][quality]
        return self.price_2k if quality == "2K" else self.price_1k

    @model_validator(mode="after")
    def _presigned_links_fit(self) -> Settings:
        if self.s3_bucket and self.s3_links == "direct" and self.result_ttl_seconds > 7 * 24 * 3600:
            raise ValueError(
                "KREASERVE_RESULT_TTL_SECONDS is over 7 days, the longest a "
                "presigned S3 link lives; lower it or set "
                "KREASERVE_S3_LINKS=redirect"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, with the SQLite default placed in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'kreaserve.db').resolve()}"

    @cached_property
    def callback_allow_host_set(self) -> frozenset[str]:
        """KREASERVE_CALLBACK_ALLOW_HOSTS, normalised as the SSRF guard compares hosts."""
        from kreaserve.outbound.ssrf import normalise_host

        return frozenset(
            normalise_host(host.strip())
            for host in self.callback_allow_hosts.split(",")
            if host.strip()
        )

    def moderation_config(self):  # type: ignore[no-untyped-def]
        """The moderation settings as the classifiers take them."""
        from kreaserve.moderation import ModerationConfig

        def names(value: str) -> tuple[str, ...]:
            return tuple(name.strip() for name in value.split(",") if name.strip())

        return ModerationConfig(
            basic_categories=names(self.moderation_basic_categories),
            strict_categories=names(self.moderation_strict_categories),
            basic_threshold=self.moderation_basic_threshold,
            strict_threshold=self.moderation_strict_threshold,
            image_threshold=self.moderation_image_threshold,
            extra_terms={k: tuple(v) for k, v in self.moderation_extra_terms.items()},
            cache_dir=self.weights_cache_dir / "moderation",
            log_prompts=self.moderation_log_prompts,
        )

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def weights_cache_dir(self) -> Path:
        return self.cache_dir or Path.home() / ".cache" / "kreaserve"

    @property
    def base_url(self) -> str:
        """Where clients reach us: the public URL, else the bound address."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def hmac_key(self) -> bytes:
        """The URL-signing key, created once in the data folder when not configured."""
        if self.secret_key:
            return self.secret_key.encode()
        from kreaserve.private import FILE_MODE, private_dir, private_file, write_new

        private_dir(self.data_dir)
        path = self.data_dir / "secret.key"
        if not path.exists():
            import secrets

            tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
            write_new(tmp, secrets.token_hex(32).encode())  # created 0600, then filled
            try:
                # Link, not rename: when two processes race, the first key wins for both.
                path.hardlink_to(tmp)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        elif path.stat().st_mode & 0o777 != FILE_MODE:
            private_file(path)  # a key written by an older version
        return path.read_text().strip().encode()
