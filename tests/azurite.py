"""Azurite's Blob service for tests: started once per session, a fresh container per test.

    from azurite import azurite, azure_storage  # noqa: F401  (fixtures)

``azurite`` (session) runs ``azurite-blob`` (npm install -g azurite) on a free
loopback port with a temporary folder; ``azure_storage`` points this process
at it through the same environment a user would set
(``AZURE_STORAGE_CONNECTION_STRING`` and ``AZURE_STORAGE_ACCOUNT_NAME``) and
yields a new container. Tests that run code elsewhere pass ``environment`` on.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, wait_for_port

# Azurite's well-known development account (github.com/Azure/Azurite#default-storage-account).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class Azurite:
    endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1, as Azurite names its blob endpoint

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs to reach this Azurite through runtimes/storage.py."""
        return {
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
            "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
        }

    def create_container(self, name: str) -> None:
        from pyarrow import fs as pafs

        from deployer.runtimes import storage

        with pytest.MonkeyPatch.context() as patch:
            for variable, value in self.environment.items():
                patch.setenv(variable, value)
            filesystem, _ = storage.filesystem(f"az://{name}")
        assert isinstance(filesystem, pafs.AzureFileSystem)
        filesystem.create_dir(name)  # a top-level directory is a container


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    executable = shutil.which("azurite-blob")
    if executable is None:
        pytest.skip(
            "Azurite is not installed: npm install -g azurite (it puts azurite-blob on PATH)"
        )
    port = free_port()
    folder: Path = tmp_path_factory.mktemp("azurite")
    with open(folder / "azurite.log", "wb") as log:
        process = subprocess.Popen(
            [
                executable,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(folder / "data"),
                "--skipApiVersionCheck",  # pyarrow's Azure SDK may be newer than Azurite
                "--loose",
                "--disableTelemetry",
                "--silent",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, process)
            yield Azurite(endpoint=f"http://127.0.0.1:{port}/{ACCOUNT}")
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def azure_storage(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new container in Azurite, with this process pointed at it; yields its name."""
    for variable in (
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_BLOB_ENDPOINT",
        "AZURE_STORAGE_DFS_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in azurite.environment.items():
        monkeypatch.setenv(variable, value)
    container = f"test-{uuid.uuid4().hex[:12]}"
    azurite.create_container(container)
    return container
