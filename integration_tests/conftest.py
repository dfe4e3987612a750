"""Integration tests against a real Qdrant server (not collected by a plain ``pytest``).

Start a server (collection metadata, where the store keeps its embedding spec, needs Qdrant
1.16 or newer) and point the tests at it::

    docker run --rm -p 6333:6333 -p 6334:6334 qdrant/qdrant:v1.20.0
    QDRANT_URL=http://localhost:6333 pytest integration_tests

or, with the compose file of this repository: ``docker compose -f docker/compose.yaml up -d
qdrant`` and then the same ``pytest`` line. ``QDRANT_API_KEY`` is passed on when the server needs
one, and ``QDRANT_GRPC_PORT`` when gRPC is not on 6334. Each test works in its own collection,
named ``sbert_it_<random>``, and deletes it afterwards. Without ``QDRANT_URL`` every test here is
skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

HERE = Path(__file__).resolve().parent
SKIP_REASON = (
    "QDRANT_URL is not set: start a Qdrant server (>= 1.16) and run"
    " `QDRANT_URL=http://localhost:6333 pytest integration_tests`"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("QDRANT_URL"):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def qdrant_url() -> str:
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip(SKIP_REASON)
    return url


@pytest.fixture(scope="session")
def grpc_port() -> int:
    return int(os.environ.get("QDRANT_GRPC_PORT", "6334"))


@pytest.fixture(scope="session")
def admin_client(qdrant_url: str, grpc_port: int) -> Iterator[QdrantClient]:
    """A REST client for inspecting and cleaning up, independent of the store under test."""
    client = QdrantClient(
        url=qdrant_url, api_key=os.environ.get("QDRANT_API_KEY") or None, grpc_port=grpc_port
    )
    yield client
    client.close()


@pytest.fixture
def collection(admin_client: QdrantClient) -> Iterator[str]:
    name = f"sbert_it_{uuid.uuid4().hex[:12]}"
    yield name
    if admin_client.collection_exists(name):
        admin_client.delete_collection(name)
