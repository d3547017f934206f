"""Start and stop Azurite (the real local Azure Storage) on free ports, for tests and `make run`.

`--skipApiVersionCheck --loose`: the Azure SDKs speak newer storage API versions than Azurite
lists, and would otherwise be refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
# Azurite's well-known development account: public, documented, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _executable() -> str:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found is None:
        raise RuntimeError("Azurite is not installed: run `npm ci` (make install does it)")
    return found


class Azurite:
    """One Azurite process serving blob, queue and table on their own free ports."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        location: Path | None = None,
        ports: tuple[int, int, int] | None = None,
        in_memory: bool = False,
    ) -> None:
        self.host = host
        self.blob_port, self.queue_port, self.table_port = ports or (
            free_port(host),
            free_port(host),
            free_port(host),
        )
        self._owned_location = location is None
        self.location = location or Path(tempfile.mkdtemp(prefix="azurite-"))
        self.in_memory = in_memory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        base = f"http://{self.host}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 30.0) -> Azurite:
        """Start the process and wait until every service accepts connections."""
        command = [
            _executable(),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableProductStyleUrl",
            "--blobHost",
            self.host,
            "--queueHost",
            self.host,
            "--tableHost",
            self.host,
            "--blobPort",
            str(self.blob_port),
            "--queuePort",
            str(self.queue_port),
            "--tablePort",
            str(self.table_port),
        ]
        # Azurite takes either a data folder or in-memory persistence, not both.
        command += (
            ["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.location)]
        )
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        for port in (self.blob_port, self.queue_port, self.table_port):
            while True:
                if self._process.poll() is not None:
                    error = self._process.stderr.read().decode() if self._process.stderr else ""
                    raise RuntimeError(f"Azurite exited at start: {error.strip()}")
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"Azurite did not listen on {port}") from None
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the process (and its children); keep the data folder for a restart."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGINT)
            # Azurite waits for idle keep-alive connections to close; do not wait that long.
            process.wait(timeout=2)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.stderr:
                process.stderr.close()

    def close(self) -> None:
        """Stop and remove the data folder if this object made it."""
        self.stop()
        if self._owned_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
