"""The Google Pub/Sub emulator (the real one, Java, shipped with the Cloud SDK) for tests and benchmarks."""

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pulsecart_cli.errors import ConfigError

EMULATOR_PATHS = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    host: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def find_emulator() -> str:
    for path in EMULATOR_PATHS:
        if Path(path).exists():
            return path
    gcloud = shutil.which("gcloud")
    if gcloud:
        candidate = Path(gcloud).resolve().parent.parent / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
        if candidate.exists():
            return str(candidate)
    raise ConfigError("the Pub/Sub emulator is not installed",
                      hint="install google-cloud-cli-pubsub-emulator (Debian) or `gcloud components install pubsub-emulator`")


def start(log_path: Path, timeout_s: float = 60.0) -> Emulator:
    """Start the emulator on a free loopback port and wait until it serves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [find_emulator(), "--host=127.0.0.1", f"--port={port}"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 - our own argv, no shell
                                   start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while "Server started" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the Pub/Sub emulator did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    return Emulator(process, f"127.0.0.1:{port}")
