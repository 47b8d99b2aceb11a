"""A kubelet stand-in: the Kubernetes emulator's Pods run as real Docker containers.

No kubelet can run here (DESIGN.md, rows "Kubernetes" and "containers"), so this plays one on the
machine's Docker Engine. For every Pod the emulated Deployment controller creates
(``rollouts.py``), one worker thread runs the pod's container as Kubernetes would resolve the spec:

- ``command`` replaces the image's entrypoint and ``args`` its command (no ``args``: none; the
  image's CMD is not used, as in Kubernetes); ``workingDir``;
- ``env``: ``value``; ``valueFrom.secretKeyRef`` and ``configMapKeyRef`` read from the stored
  objects (base64 decoded), ``fieldRef`` for the pod's name, namespace and uid. A missing object
  or key leaves the container waiting in ``CreateContainerConfigError`` with the kubelet's
  message, retried with back-off until it appears;
- ``securityContext`` (pod level, overridden per container): ``runAsUser``/``runAsGroup``
  (``runAsNonRoot`` refuses a root user, as the kubelet does), ``readOnlyRootFilesystem``,
  ``capabilities.drop``/``add``, ``allowPrivilegeEscalation: false`` (no-new-privileges),
  ``privileged``;
- ``emptyDir`` volumes as tmpfs mounts of their ``sizeLimit``; ``resources.limits`` memory and
  cpu as Docker's memory and CPU limits;
- the image must be on the node: there is no registry, so a missing image waits in
  ``ErrImageNeverPull`` (``imagePullPolicy: Never``) or ``ImagePullBackOff`` (any other policy);
- probes (``httpGet`` only, the chart's kind) are polled over HTTP at the container's address on
  the Docker bridge, with their period, timeout and thresholds: the startup probe gates the
  others, readiness sets the pod's Ready condition (the ingress stand-in routes only to ready
  pods), and a failed liveness or startup probe kills the container;
- a container that exits (or is killed behind the kubelet's back, ``docker kill``) is restarted
  with back-off (``backoff_seconds`` doubling up to ``backoff_cap_seconds``; the kubelet's are 10 s
  and 300 s): in between the pod shows ``CrashLoopBackOff`` and the last run's exit code, with
  the container's last log line as the termination message where the container asks for it
  (``terminationMessagePolicy: FallbackToLogsOnError``);
- deleting the Pod stops its container (SIGTERM, then SIGKILL after the pod's
  ``terminationGracePeriodSeconds``) and removes it;
- Service names as cluster DNS resolves them: this kubelet's pods run on a Docker network of
  their own, and each container's ``/etc/hosts`` maps every Service of its namespace (``svc``,
  ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``, as they exist when it starts) to that
  network's gateway (``gateway``), where the kube-proxy stand-in (``ingress.ServiceProxy``)
  forwards to the Service's ready pods.

What it does not do: multiple containers per pod, init containers, exec or TCP probes, volumes
other than emptyDir, image pulls. A pod asking for them waits with a message saying so.

Every container carries the label ``io.modelport.kubelet=<this kubelet's id>``; ``close()``
removes them all. The emulator calls ``pod_added`` / ``pod_deleted`` on its event loop, and this
reports pod statuses back through ``PodSink.pod_status`` (thread-safe).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker
import docker.errors
import httpx

logger = logging.getLogger("tests.kubelet")

JsonObj = dict[str, Any]
LABEL = "io.modelport.kubelet"


class PodSink(Protocol):
    """What the kubelet needs from the API server (the emulator)."""

    def pod_status(self, namespace: str, name: str, uid: str, status: JsonObj) -> None:
        """Write a pod's status (any thread; ignored when the pod with that uid is gone)."""

    def read_object(self, plural: str, namespace: str, name: str) -> JsonObj | None:
        """A stored core/v1 object (secrets, configmaps), from any thread."""

    def list_objects(self, plural: str, namespace: str) -> list[JsonObj]:
        """The stored core/v1 objects of a kind (services) in a namespace, from any thread."""


class ConfigError(Exception):
    """The container cannot be created yet: ``reason`` and the kubelet's message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
}  # fmt: skip


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``512Mi``, ``2Gi``, ``250m``, ``1.5``) as a number."""
    text = str(value).strip()
    if text.endswith("m") and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) / 1000
    for suffix, factor in sorted(_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@dataclass
class ContainerRun:
    """Everything ``docker run`` needs for one pod's container."""

    image: str
    entrypoint: list[str] | None
    command: list[str] | None
    environment: dict[str, str]
    user: str | None
    read_only: bool
    cap_drop: list[str]
    cap_add: list[str]
    security_opt: list[str]
    privileged: bool
    tmpfs: dict[str, str]
    mem_limit: int | None
    nano_cpus: int | None
    working_dir: str | None


def _security(pod_spec: JsonObj, container: JsonObj) -> JsonObj:
    merged = dict(pod_spec.get("securityContext") or {})
    merged.update(container.get("securityContext") or {})
    return merged


def _image_user(client: docker.DockerClient, image: str) -> str:
    return str(client.images.get(image).attrs.get("Config", {}).get("User") or "")


def resolve(pod: JsonObj, sink: PodSink, client: docker.DockerClient) -> ContainerRun:
    """The pod's one container as Docker runs it; ConfigError when the kubelet could not."""
    meta, spec = pod["metadata"], pod["spec"]
    namespace = meta["namespace"]
    containers = spec.get("containers") or []
    if len(containers) != 1 or spec.get("initContainers"):
        raise ConfigError("CreateContainerConfigError", "the kubelet stand-in runs pods of exactly one container")
    container = containers[0]
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = str(entry["value"])
            continue
        source = entry.get("valueFrom") or {}
        if "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            values = {"metadata.name": meta["name"], "metadata.namespace": namespace, "metadata.uid": meta["uid"]}
            if path not in values:
                raise ConfigError("CreateContainerConfigError", f"unsupported fieldPath {path!r}")
            env[name] = values[path]
            continue
        for ref_name, plural, kind in (("secretKeyRef", "secrets", "Secret"), ("configMapKeyRef", "configmaps",
                                                                                 "ConfigMap")):
            ref = source.get(ref_name)
            if ref is None:
                continue
            obj = sink.read_object(plural, namespace, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    break
                raise ConfigError("CreateContainerConfigError", f'{kind.lower()} "{ref["name"]}" not found')
            data = obj.get("data") or {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    break
                raise ConfigError(
                    "CreateContainerConfigError", f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                )
            raw = data[ref["key"]]
            env[name] = base64.b64decode(raw).decode() if plural == "secrets" else str(raw)
            break
        else:
            raise ConfigError("CreateContainerConfigError", f"env {name}: unsupported valueFrom {sorted(source)}")
    security = _security(spec, container)
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    user = None if uid is None else (f"{uid}:{gid}" if gid is not None else str(uid))
    if security.get("runAsNonRoot"):
        effective = str(uid) if uid is not None else _image_user(client, container["image"]).split(":")[0]
        if effective in ("", "0", "root"):
            raise ConfigError("CreateContainerConfigError", "container has runAsNonRoot and image will run as root")
    volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
    tmpfs: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None or "emptyDir" not in volume:
            raise ConfigError("CreateContainerConfigError", f"volume {mount['name']!r}: only emptyDir is supported")
        options = ["mode=1777"]
        size = (volume.get("emptyDir") or {}).get("sizeLimit")
        if size:
            options.append(f"size={int(quantity(size))}")
        tmpfs[mount["mountPath"]] = ",".join(options)
    capabilities = security.get("capabilities") or {}
    limits = (container.get("resources") or {}).get("limits") or {}
    return ContainerRun(
        image=container["image"],
        entrypoint=list(container["command"]) if container.get("command") else None,
        command=list(container.get("args") or []) if container.get("command") or container.get("args") else None,
        environment=env,
        user=user,
        read_only=bool(security.get("readOnlyRootFilesystem")),
        cap_drop=list(capabilities.get("drop") or []),
        cap_add=list(capabilities.get("add") or []),
        security_opt=["no-new-privileges"] if security.get("allowPrivilegeEscalation") is False else [],
        privileged=bool(security.get("privileged")),
        tmpfs=tmpfs,
        mem_limit=int(quantity(limits["memory"])) if "memory" in limits else None,
        nano_cpus=int(quantity(limits["cpu"]) * 1e9) if "cpu" in limits else None,
        working_dir=container.get("workingDir"),
    )


@dataclass
class Probe:
    """One httpGet probe of the pod spec and its running tally."""

    path: str
    port: int
    period: float
    timeout: float
    failure_threshold: int
    success_threshold: int = 1
    failures: int = 0
    successes: int = 0
    due: float = 0.0

    @classmethod
    def of(cls, spec: JsonObj | None, ports: dict[str, int]) -> Probe | None:
        if not spec:
            return None
        get = spec.get("httpGet")
        if get is None:
            raise ConfigError("CreateContainerConfigError", "the kubelet stand-in runs httpGet probes only")
        port = get["port"]
        return cls(
            path=get.get("path", "/"),
            port=ports[port] if isinstance(port, str) else int(port),
            period=float(spec.get("periodSeconds", 10)),
            timeout=float(spec.get("timeoutSeconds", 1)),
            failure_threshold=int(spec.get("failureThreshold", 3)),
            success_threshold=int(spec.get("successThreshold", 1)),
            due=float(spec.get("initialDelaySeconds", 0)),
        )

    def check(self, client: httpx.Client, address: str) -> bool:
        try:
            response = client.get(f"http://{address}:{self.port}{self.path}", timeout=self.timeout)
        except httpx.HTTPError:
            ok = False
        else:
            ok = 200 <= response.status_code < 400
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        return ok


@dataclass
class PodState:
    """What the kubelet reports for a pod: its one container's status and the pod's readiness."""

    name: str
    image: str
    restart_count: int = 0
    state: JsonObj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JsonObj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    pod_ip: str | None = None
    start_time: str = field(default_factory=_now)

    def status(self) -> JsonObj:
        running = "running" in self.state
        ready = "True" if self.ready else "False"
        container: JsonObj = {
            "name": self.name, "image": self.image, "imageID": "", "restartCount": self.restart_count,
            "ready": self.ready, "started": self.started, "state": self.state, "lastState": self.last_state,
        }  # fmt: skip
        status: JsonObj = {
            "phase": "Running" if running or self.restart_count else "Pending",
            "hostIP": "127.0.0.1",
            "startTime": self.start_time,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ],
            "containerStatuses": [container],
        }
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        return status


class PodWorker(threading.Thread):
    """Runs one pod's container until the pod is deleted."""

    def __init__(self, kubelet: DockerKubelet, pod: JsonObj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"kubelet-{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.pod = pod
        self.namespace, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        container = pod["spec"]["containers"][0]
        self.container_name = container.get("name", "main")
        self.state = PodState(name=self.container_name, image=container.get("image", ""))
        self.deleted = threading.Event()
        self._reported: JsonObj | None = None
        self._container: Any = None

    # ---- reporting ----------------------------------------------------------------------------

    def report(self) -> None:
        status = self.state.status()
        comparable = {k: v for k, v in status.items() if k != "startTime"}
        if comparable != self._reported and not self.deleted.is_set():
            self._reported = comparable
            self.kubelet.sink.pod_status(self.namespace, self.pod_name, self.uid, status)

    def waiting(self, reason: str, message: str) -> None:
        self.state.state = {"waiting": {"reason": reason, "message": message}}
        self.state.ready = self.state.started = False
        self.report()

    # ---- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = self.kubelet.backoff_seconds
        client = httpx.Client()
        try:
            while not self.deleted.is_set():
                try:
                    config = resolve(self.pod, self.kubelet.sink, self.kubelet.client)
                    self._check_image(config.image)
                except ConfigError as error:
                    self.waiting(error.reason, error.message)
                    self.deleted.wait(backoff)
                    backoff = min(backoff * 2, self.kubelet.backoff_cap_seconds)
                    continue
                except docker.errors.DockerException as error:
                    self.waiting("CreateContainerError", str(error))
                    self.deleted.wait(backoff)
                    continue
                ran_long = self._run_once(config, client)
                if self.deleted.is_set():
                    break
                if ran_long:
                    backoff = self.kubelet.backoff_seconds
                self.state.restart_count += 1
                self.waiting(
                    "CrashLoopBackOff",
                    f"back-off {backoff:g}s restarting failed container={self.container_name} "
                    f"pod={self.pod_name}_{self.namespace}({self.uid})",
                )
                self.kubelet.restart_gate.wait()
                self.deleted.wait(backoff)
                backoff = min(backoff * 2, self.kubelet.backoff_cap_seconds)
        except Exception:  # noqa: BLE001 - a stand-in bug must show, not hang a test
            logger.exception("kubelet worker for pod %s/%s failed", self.namespace, self.pod_name)
            self.waiting("KubeletError", "the kubelet stand-in failed; see the test log")
        finally:
            client.close()
            self._remove()

    def _check_image(self, image: str) -> None:
        try:
            self.kubelet.client.images.get(image)
        except docker.errors.ImageNotFound:
            policy = self.pod["spec"]["containers"][0].get("imagePullPolicy", "IfNotPresent")
            if policy == "Never":
                raise ConfigError(
                    "ErrImageNeverPull", f'Container image "{image}" is not present with pull policy of Never'
                ) from None
            raise ConfigError(
                "ImagePullBackOff",
                f'Back-off pulling image "{image}": the image is not on this node and no registry is reachable '
                "(build it with `make image`)",
            ) from None

    def _run_once(self, config: ContainerRun, client: httpx.Client) -> bool:
        """Run the container until it exits, is killed by a failed probe, or the pod goes; True
        when it ran long enough (10 minutes, the kubelet's rule) for the back-off to reset."""
        spec = self.pod["spec"]
        container_spec = spec["containers"][0]
        self._container = self.kubelet.client.containers.run(
            config.image,
            entrypoint=config.entrypoint,
            command=config.command if config.command is not None else ([] if config.entrypoint else None),
            environment=config.environment,
            user=config.user,
            read_only=config.read_only,
            cap_drop=config.cap_drop or None,
            cap_add=config.cap_add or None,
            security_opt=config.security_opt or None,
            privileged=config.privileged,
            tmpfs=config.tmpfs or None,
            mem_limit=config.mem_limit,
            nano_cpus=config.nano_cpus,
            working_dir=config.working_dir,
            network=self.kubelet.network.name,
            extra_hosts=self.kubelet.service_hosts(self.namespace),
            name=f"k8s_{self.container_name}_{self.pod_name}_{self.namespace}_{self.uid[:8]}_{self.state.restart_count}",
            labels={LABEL: self.kubelet.id, f"{LABEL}.pod": self.uid, f"{LABEL}.namespace": self.namespace},
            detach=True,
        )
        started = self._container.attrs.get("Created") or _now()
        self._container.reload()
        address = self._container.attrs["NetworkSettings"]["Networks"][self.kubelet.network.name]["IPAddress"]
        self.state.pod_ip = address
        self.state.state = {"running": {"startedAt": _now()}}
        self.state.ready = self.state.started = False
        self.report()
        exited = threading.Event()
        threading.Thread(target=self._await_exit, args=(self._container, exited), daemon=True).start()
        ports = {p["name"]: int(p["containerPort"]) for p in container_spec.get("ports") or [] if "name" in p}
        try:
            startup = Probe.of(container_spec.get("startupProbe"), ports)
            liveness = Probe.of(container_spec.get("livenessProbe"), ports)
            readiness = Probe.of(container_spec.get("readinessProbe"), ports)
        except ConfigError as error:
            self._kill(0)
            self.waiting(error.reason, error.message)
            return False
        clock = _Clock()
        for probe in (startup, liveness, readiness):
            if probe is not None:
                probe.due += clock.now()
        self.state.started = startup is None
        if startup is None and readiness is None:
            self.state.ready = True
        self.report()
        while not self.deleted.is_set() and not exited.is_set():
            active = [startup] if not self.state.started and startup else [p for p in (liveness, readiness) if p]
            due = min((p.due for p in active), default=clock.now() + 3600)
            if exited.wait(max(0.0, due - clock.now())) or self.deleted.is_set():
                break
            now = clock.now()
            for probe in active:
                if probe.due > now:
                    continue
                ok = probe.check(client, address)
                probe.due = now + probe.period
                if probe is startup:
                    if ok:
                        self.state.started = True
                        if readiness is not None:
                            readiness.due = now  # at once, not a period later
                        else:
                            self.state.ready = True
                    elif probe.failures >= probe.failure_threshold:
                        self._kill(int(spec.get("terminationGracePeriodSeconds", 30)))
                elif probe is liveness and not ok and probe.failures >= probe.failure_threshold:
                    self._kill(int(spec.get("terminationGracePeriodSeconds", 30)))
                elif probe is readiness:
                    if ok and probe.successes >= probe.success_threshold:
                        self.state.ready = True
                    elif not ok and probe.failures >= probe.failure_threshold:
                        self.state.ready = False
            self.report()
        if self.deleted.is_set():
            return False
        exited.wait(60)
        return self._record_exit(started, clock.now() >= 600)

    def _await_exit(self, container: Any, exited: threading.Event) -> None:
        with contextlib.suppress(Exception):
            container.wait()
        exited.set()

    def _record_exit(self, started: str, ran_long: bool) -> bool:
        container = self._container
        container.reload()
        state = container.attrs.get("State", {})
        exit_code = int(state.get("ExitCode", 0))
        message = ""
        if self.pod["spec"]["containers"][0].get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code:
            lines = container.logs(stdout=True, stderr=True, tail=20).decode(errors="replace").strip().splitlines()
            message = lines[-1] if lines else ""
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if exit_code == 0 else "Error")
        self.state.last_state = {
            "terminated": {
                "exitCode": exit_code, "reason": reason, "message": message,
                "startedAt": started, "finishedAt": state.get("FinishedAt") or _now(),
            }
        }  # fmt: skip
        self.state.pod_ip = None
        self._remove()
        return ran_long

    def _kill(self, grace: int) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self._container.stop(timeout=grace)

    def _remove(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)

    def stop(self) -> None:
        """The pod was deleted: stop its container gracefully, then remove it."""
        self.deleted.set()
        container = self._container
        if container is not None:
            self._kill(int(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))


class _Clock:
    def __init__(self) -> None:
        self._start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._start


class DockerKubelet:
    """The node: runs the emulator's pods as containers on the local Docker Engine."""

    def __init__(self, *, backoff_seconds: float = 10.0, backoff_cap_seconds: float = 300.0) -> None:
        self.client = docker.from_env()
        self.client.ping()
        self.id = uuid.uuid4().hex[:12]
        self.backoff_seconds = backoff_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self.sink: PodSink = _Unattached()
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        # set = restarts go ahead after their back-off; tests clear it to hold a crashed pod down
        self.restart_gate = threading.Event()
        self.restart_gate.set()
        self.network = self.client.networks.create(f"modelport-kubelet-{self.id}", driver="bridge",
                                                   labels={LABEL: self.id})
        self.network.reload()
        #: where this kubelet's pods reach the host, and where the Services' proxy listens
        self.gateway: str = self.network.attrs["IPAM"]["Config"][0]["Gateway"]

    def attach(self, sink: PodSink) -> None:
        self.sink = sink

    def service_hosts(self, namespace: str) -> dict[str, str]:
        """The ``/etc/hosts`` entries of a container in ``namespace``: its Services' DNS names."""
        hosts: dict[str, str] = {}
        for service in self.sink.list_objects("services", namespace):
            name = service["metadata"]["name"]
            for alias in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                          f"{name}.{namespace}.svc.cluster.local"):
                hosts[alias] = self.gateway
        return hosts

    def pod_added(self, pod: JsonObj) -> None:
        worker = PodWorker(self, pod)
        with self._lock:
            self._workers[pod["metadata"]["uid"]] = worker
        worker.start()

    def pod_deleted(self, pod: JsonObj) -> None:
        with self._lock:
            worker = self._workers.pop(pod["metadata"]["uid"], None)
        if worker is not None:
            threading.Thread(target=worker.stop, name="kubelet-stop", daemon=True).start()

    @contextlib.contextmanager
    def holding_restarts(self) -> Any:
        """Crashed containers wait (CrashLoopBackOff) until the block ends, then restart."""
        self.restart_gate.clear()
        try:
            yield
        finally:
            self.restart_gate.set()

    def containers(self, namespace: str | None = None, *, all: bool = False) -> list[Any]:  # noqa: A002
        """This kubelet's containers (running ones unless ``all``), optionally of one namespace."""
        labels = [f"{LABEL}={self.id}"] + ([f"{LABEL}.namespace={namespace}"] if namespace else [])
        return self._inspect(self.client.containers.list(all=all, filters={"label": labels}, sparse=True))

    def _inspect(self, listed: list[Any]) -> list[Any]:
        """Each listed container in full; one removed since the listing (a pod going) is left out."""
        found = []
        for container in listed:
            with contextlib.suppress(docker.errors.NotFound):
                found.append(self.client.containers.get(container.id))
        return found

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        self.restart_gate.set()
        for worker in workers:
            worker.deleted.set()
            worker._kill(0)
        for worker in workers:
            worker.join(timeout=30)
        for container in self.containers(all=True):
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.DockerException):
            self.network.remove()


class _Unattached:
    def pod_status(self, namespace: str, name: str, uid: str, status: JsonObj) -> None:
        raise RuntimeError("the kubelet is not attached to an API server")

    def read_object(self, plural: str, namespace: str, name: str) -> JsonObj | None:
        raise RuntimeError("the kubelet is not attached to an API server")

    def list_objects(self, plural: str, namespace: str) -> list[JsonObj]:
        raise RuntimeError("the kubelet is not attached to an API server")

