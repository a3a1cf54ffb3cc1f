"""`upgrade` skips Alembic when the database is at the newest revision, and only then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from kreaserve.db import migrate

ROOT = Path(__file__).resolve().parents[2]


def _revision(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version"))
            }
    finally:
        engine.dispose()


def test_shipped_head_is_alembics_head() -> None:
    assert migrate.shipped_head() == migrate.head_revision()


def test_an_older_or_missing_schema_is_still_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert not migrate.at_head(url)
    older = f"{int(migrate.shipped_head()) - 1:04d}"
    migrate.upgrade(url, older)
    assert _revision(url) == {older}
    assert not migrate.at_head(url)
    migrate.upgrade(url)
    assert _revision(url) == {migrate.shipped_head()}
    assert migrate.at_head(url)


def test_errors_are_left_to_alembic() -> None:
    assert not migrate.at_head("nosuchdialect://x")
    assert not migrate.at_head("sqlite:////nonexistent-dir/k.db")


def test_an_api_process_on_a_migrated_database_imports_no_alembic_nor_boto3(
    tmp_path: Path,
) -> None:
    # What `kreaserve serve` does on start, in a fresh interpreter: migrate (a no-op here),
    # build the app. Alembic (with Mako and Pygments) and boto3 (no S3 configured) are
    # megabytes the API process would keep for nothing (BENCHMARKS.md, issue 12).
    url = f"sqlite:///{tmp_path / 'k.db'}"
    migrate.upgrade(url)
    code = (
        "import sys\n"
        "from kreaserve.config import Settings\n"
        "from kreaserve.db import upgrade\n"
        "from kreaserve.api.app import create_app\n"
        f"upgrade({url!r})\n"
        f"create_app(Settings(data_dir={str(tmp_path / 'data')!r}, database_url={url!r}))\n"
        "print(sorted(m for m in ('alembic', 'mako', 'boto3', 'botocore', 'torch') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "KREASERVE_SECRET_KEY": "test-secret"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
