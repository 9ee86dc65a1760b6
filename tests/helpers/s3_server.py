"""A real S3 API for tests: moto's server mode in its own process group, on a free port.

``S3Server.start()`` launches ``python -m moto.server -p 0`` (moto prints the port it bound),
waits (with a deadline) until it answers, and ``env()`` gives the AWS_* variables that point boto3,
pyarrow and Ray's workers at it. ``stop()`` ends only its own process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class S3Server:
    endpoint: str = ""
    process: subprocess.Popen | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1]))

    def start(self, deadline_s: float = 60.0) -> S3Server:
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                        stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", self.log.read_text(errors="replace"))
            if found:
                self.endpoint = found.group(1)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not start within {deadline_s}s: {self.log.read_text()[-2000:]}")

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object under ``prefix``."""
        out = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.unlink(missing_ok=True)
