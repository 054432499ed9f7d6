"""A stateful fake of the GCE Compute REST API (v1) on loopback, token exchange included.

Why a fake server and not mocks: the provider is tested through libcloud's real
``GCENodeDriver`` doing real HTTP, so the bytes on the wire (paths, JSON bodies, OAuth
requests, operation polling, error bodies) are what the real API would see and send back.
The fake keeps state between requests (instances, disks, firewalls, operations, quota usage)
and offers switches to inject the failures the provider must survive.

What is offered where comes from orchestrate's GPU catalog snapshot
(``orchestrate.core.api.gpu_catalog``, generated from a public catalog): accelerator types per
zone (no K80 anywhere: GCE retired it), N1 machine types where the catalog prices them, and the
accelerator-optimized types (g2, a2, a3) that carry their GPUs. Like the real API, it refuses:

- a body that does not match Google's published Compute v1 discovery document (unknown
  field, wrong type, missing required field: 400 INVALID_ARGUMENT, see `tests.bed.discovery`);
- a GPU on a machine type it does not run on ("features are not compatible"), and
  ``guestAccelerators`` on a type that carries its own;
- with ``faults.missing_service_account_user``, attaching a service account (the caller lacks
  ``iam.serviceAccountUser``).

OS Login: with ``enable-oslogin=TRUE`` in project metadata (`set_project_metadata`) and not
overridden by the instance's own metadata, ``ssh-keys`` are ignored. With
``authorized_keys_file`` set, the fake writes there the keys a running instance would accept,
so the bed's real sshd refuses a key that OS Login would ignore.

What it serves, under ``/compute/v1/projects/{project}``: the project (with
``GPUS_ALL_REGIONS`` in ``quotas``), zones, regions (with GPU quotas), machine/disk/accelerator
types, image families (in ``ubuntu-os-cloud`` and ``debian-cloud``), networks, firewalls,
instances (insert/get/list/start/stop/delete), disks, zone and global operations (with
``/wait``) and aggregated lists. The OAuth token endpoint answers at ``/o/oauth2/token`` (where
libcloud posts, relative to its redirected ``url=``) and ``/token`` (the ``token_uri`` written
into test credentials). Service-account JWTs are verified against the registered public key,
so a key file with the wrong key is refused like Google refuses it.

``selfLink`` values start with ``https://www.googleapis.com/compute/v1/projects/...`` as on the
real API: libcloud strips scheme and host before following them, so they reach the fake.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from orchestrate.core.api import gpu_catalog

from tests.bed import discovery, gce_firewall

API_HOST = "https://www.googleapis.com"
API_ROOT = API_HOST + "/compute/v1"
DEFAULT_PROJECT = "orchestrate-test"
DEFAULT_ADDRESSES = ("127.0.0.1",)


class BedHost(Protocol):
    """A host of the multi-node bed (``tests/bed/nodes.BedNode``), as the fake sees it."""

    @property
    def external_address(self) -> str: ...
    @property
    def internal_address(self) -> str: ...
    def apply_ingress(self, ruleset: str) -> None: ...
    def wipe(self) -> None: ...
    def power_off(self) -> None: ...
    def power_on(self) -> None: ...
    def take_power_request(self) -> str | None: ...


#: (vCPUs, memory MB, accelerator the type carries or None, how many)
MachineShape = tuple[int, int, str | None, int]


def _catalog_zones() -> tuple[dict[str, tuple[str, ...]], dict[str, MachineShape]]:
    """Zones and machine types from the catalog snapshot: accelerator types per zone, and
    machine type -> (vCPUs, memory MB, accelerator it carries or None, how many)."""
    offers: dict[str, set[str]] = {}
    for accelerator, entry in gpu_catalog.gce_accelerators().items():
        for zone in entry["zones"]:
            offers.setdefault(zone, set()).add(accelerator)
    machines: dict[str, MachineShape] = {}
    for name, entry in {**gpu_catalog.gce_hosts(), **gpu_catalog.gce_machine_types()}.items():
        machines[name] = (
            int(entry["vcpus"]),
            int(float(entry["memory_gib"]) * 1024),
            entry.get("gpu"),
            int(entry.get("gpus", 0)),
        )
        for zone in entry["zones"]:
            offers.setdefault(zone, set())
    return {z: tuple(sorted(a)) for z, a in sorted(offers.items())}, machines


#: zone -> accelerator types offered there; machine type -> (vCPUs, MB, built-in GPU, count).
ZONE_ACCELERATORS, MACHINE_TYPES = _catalog_zones()
#: machine type -> the zones that have it (N1 hosts and accelerator-optimized types).
MACHINE_ZONES: dict[str, frozenset[str]] = {
    name: frozenset(entry["zones"])
    for name, entry in {**gpu_catalog.gce_hosts(), **gpu_catalog.gce_machine_types()}.items()
}

DISK_TYPES: dict[str, str] = {
    "pd-standard": "Standard Persistent Disk",
    "pd-balanced": "Balanced Persistent Disk",
    "pd-ssd": "SSD Persistent Disk",
}

#: (project, name, family, description) of the public images the fake knows.
IMAGES: tuple[tuple[str, str, str, str], ...] = (
    (
        "ubuntu-os-cloud",
        "ubuntu-2204-jammy-v20240319",
        "ubuntu-2204-lts",
        "Canonical, Ubuntu, 22.04 LTS, amd64 jammy image built on 2024-03-19",
    ),
    (
        "ubuntu-os-cloud",
        "ubuntu-2004-focal-v20240307",
        "ubuntu-2004-lts",
        "Canonical, Ubuntu, 20.04 LTS, amd64 focal image built on 2024-03-07",
    ),
    ("debian-cloud", "debian-12-bookworm-v20240312", "debian-12", "Debian, Debian GNU/Linux 12"),
)
IMAGE_PROJECTS = frozenset(image[0] for image in IMAGES)

NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")


def region_of(zone: str) -> str:
    """``us-east1-c`` -> ``us-east1``."""
    return zone.rsplit("-", 1)[0]


def gpu_quota_metric(accelerator: str, *, preemptible: bool = False) -> str:
    """The regional quota metric GCE charges an accelerator to (``NVIDIA_T4_GPUS``)."""
    core_name = accelerator.removeprefix("nvidia-").removeprefix("tesla-")
    metric = "NVIDIA_" + core_name.upper().replace("-", "_") + "_GPUS"
    return ("PREEMPTIBLE_" + metric) if preemptible else metric


REGIONS: dict[str, tuple[str, ...]] = {}
for _zone in ZONE_ACCELERATORS:
    REGIONS.setdefault(region_of(_zone), ())
    REGIONS[region_of(_zone)] += (_zone,)
GPU_METRICS = tuple(
    sorted(
        {
            gpu_quota_metric(a, preemptible=p)
            for a in gpu_catalog.gce_accelerators()
            for p in (False, True)
        }
    )
)
#: What GCE answers an insert that attaches a service account the caller may not act as.
SERVICE_ACCOUNT_USER_MESSAGE = (
    "The user does not have access to service account '{email}'.  User: "
    "'orchestrate-test@orchestrate-test.iam.gserviceaccount.com'.  Ask a project owner to "
    "grant you the iam.serviceAccountUser role on the service account"
)


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _zone_in(url: str) -> str | None:
    match = re.search(r"zones/([^/]+)/", url)
    return match.group(1) if match else None


class ApiError(Exception):
    """Raised inside a handler to answer with a GCE-shaped error body."""

    def __init__(self, status: int, reason: str, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.status,
            "message": self.message,
            "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
        }
        if self.field:  # a schema violation: Google adds the status and the field
            error["status"] = "INVALID_ARGUMENT"
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": self.field, "description": self.message}],
                }
            ]
        return {"error": error}


@dataclass
class RecordedRequest:
    """One request the fake received: tests assert on these (what was sent, in order)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class GceFaults:
    """Failure switches. ``reset()`` puts every switch back to off.

    - ``stockout_zones``: inserts there fail with ``ZONE_RESOURCE_POOL_EXHAUSTED`` in the
      operation (as GCE usually does), or, with ``stockout_on_insert``, synchronously with
      HTTP 503 ``ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS``.
    - ``exhausted_quota_regions``: GPU quota limits in these regions read 0 and GPU inserts
      there fail with ``QUOTA_EXCEEDED`` on the regional metric (``NVIDIA_T4_GPUS``).
    - ``zero_global_gpu_quota``: the project's ``GPUS_ALL_REGIONS`` limit reads 0 (the default
      of a new project) and every GPU insert fails with ``QUOTA_EXCEEDED``.
    - ``operation_latency``: seconds before an operation is DONE (PENDING, then RUNNING).
    - ``server_errors``: the next N API requests (whose path contains ``server_error_path``,
      when set) answer ``server_error_status`` (503) and change nothing.
    - ``auth_failure``: the token endpoint refuses every grant and the API answers 401.
    - ``change_ip_on_start``: a started instance gets the next address of
      ``instance_addresses`` (ephemeral IPs change on stop/start on the real cloud).
    - ``missing_service_account_user``: the caller lacks ``iam.serviceAccountUser``, so an
      insert that attaches a service account is refused (400).
    """

    stockout_zones: set[str] = field(default_factory=set)
    stockout_on_insert: bool = False
    exhausted_quota_regions: set[str] = field(default_factory=set)
    zero_global_gpu_quota: bool = False
    operation_latency: float = 0.0
    server_errors: int = 0
    server_error_status: int = 503
    server_error_path: str | None = None
    auth_failure: bool = False
    change_ip_on_start: bool = False
    missing_service_account_user: bool = False


@dataclass
class _Operation:
    resource: dict[str, Any]
    created: float
    done_at: float
    finish: Callable[[], dict[str, Any] | None]
    finished: bool = False


class GceFake:
    """The fake API. Start it (or use it as a context manager), point libcloud at
    ``endpoint`` and read ``requests`` / ``instances`` / ``firewalls`` to assert."""

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        *,
        instance_addresses: Iterable[str] = DEFAULT_ADDRESSES,
        gpu_quota: float = 8.0,
    ) -> None:
        self.project = project
        self.default_addresses = list(instance_addresses)
        self.default_gpu_quota = gpu_quota
        self.lock = threading.RLock()
        self._ids = itertools.count(1_000_000_000_000)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._service_accounts: dict[str, Any] = {}
        self._refresh_tokens: dict[str, tuple[str, str]] = {}
        self._hosts: list[BedHost] = []  # the multi-node bed's hosts (use_nodes)
        self._host_of: dict[tuple[str, str], int] = {}  # instance -> index in _hosts
        self.reset()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> GceFake:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gce-fake",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GceFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL to redirect libcloud to (API and token exchange share it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return self.endpoint + "/token"

    def reset(self) -> None:
        """Forget every resource, request, token and switch (registered keys stay)."""
        with self.lock:
            self.faults = GceFaults()
            self.instance_addresses = list(self.default_addresses)
            self.gpu_quota = self.default_gpu_quota
            self._instances: dict[tuple[str, str], dict[str, Any]] = {}
            self._disks: dict[tuple[str, str], dict[str, Any]] = {}
            self._firewalls: dict[str, dict[str, Any]] = {}
            self._operations: dict[str, _Operation] = {}
            self._tokens: dict[str, str] = {}
            self._released_ips: dict[tuple[str, str], str] = {}
            self._requests: list[RecordedRequest] = []
            self.project_metadata: dict[str, str] = {}
            self.authorized_keys_file: Path | None = None
            if self._hosts:
                for index in set(self._host_of.values()):
                    self._hosts[index].wipe()  # its instance is forgotten: deleted
                self._host_of = {}
                self._enforce_firewalls()  # no instance left: every node denies all again
            self._hosts = []
            self._host_of = {}

    # ------------------------------------------------------------- bed nodes
    def use_nodes(self, hosts: Iterable[BedHost]) -> None:
        """Give instances the addresses of the multi-node bed's hosts from now on.

        Each instance created takes the first free host: ``natIP`` = its external address,
        ``networkIP`` = its internal one.  Deleting the instance wipes the host (a new VM
        starts empty) and frees it; stop and start keep it, and power the host off and on
        (its processes end, its containers stop, and those with a restart policy start
        again).  A guest's own ``poweroff`` on the host stops the instance (TERMINATED, the
        ephemeral address released), as on GCE; its ``reboot`` powers it off and on.  The
        firewall rules are loaded
        into every host whenever an instance or a firewall changes (`tests/bed/
        gce_firewall.py`), so what the product's rules allow is what the hosts admit.  With
        no free host, an insert fails like a zone out of capacity.  ``reset`` forgets the
        hosts (wiping those that carried an instance, and denying all ingress on every one
        first); without hosts the fake hands out
        ``instance_addresses`` as before.
        """
        with self.lock:
            self._hosts = list(hosts)
            self._host_of = {}
            self._enforce_firewalls()

    def host_of(self, zone: str, name: str) -> BedHost | None:
        """The bed host an instance runs on (None without nodes)."""
        with self.lock:
            index = self._host_of.get((zone, name))
            return None if index is None else self._hosts[index]

    def _take_host(self, zone: str, name: str) -> BedHost:
        taken = set(self._host_of.values())
        for index in range(len(self._hosts)):
            if index not in taken:
                self._host_of[(zone, name)] = index
                return self._hosts[index]
        raise ApiError(
            503,
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
            f"The zone 'projects/{self.project}/zones/{zone}' does not have enough resources "
            f"available to fulfill the request (the test bed has {len(self._hosts)} nodes, "
            "each already running an instance).",
        )

    def _free_host(self, zone: str, name: str, *, wipe: bool) -> None:
        index = self._host_of.pop((zone, name), None)
        if index is not None and wipe:
            self._hosts[index].wipe()

    def _enforce_firewalls(self) -> None:
        """Load into every host what GCE would admit to its instance (nothing if none)."""
        on_host = {index: key for key, index in self._host_of.items()}
        instances = list(self._instances.values())
        firewalls = list(self._firewalls.values())
        for index, host in enumerate(self._hosts):
            key = on_host.get(index)
            instance = self._instances.get(key) if key is not None else None
            if instance is not None and instance["status"] != "RUNNING":
                instance = None  # a stopped VM answers nothing
            allows = gce_firewall.node_allows(instance, instances, firewalls)
            host.apply_ingress(gce_firewall.iptables_ruleset(allows))

    # ------------------------------------------------------------ credentials
    def register_service_account(self, email: str, public_key: Any) -> None:
        """Accept JWTs from `email` signed by the private half of `public_key`."""
        with self.lock:
            self._service_accounts[email] = public_key

    def register_refresh_token(self, client_id: str, client_secret: str, token: str) -> None:
        """Accept a refresh-token grant (application-default credentials)."""
        with self.lock:
            self._refresh_tokens[token] = (client_id, client_secret)

    def set_project_metadata(self, key: str, value: str) -> None:
        """Project-wide metadata, as ``gcloud compute project-info add-metadata`` sets it
        (``enable-oslogin=TRUE`` is what an OS Login project has)."""
        with self.lock:
            self.project_metadata[key] = value

    def accepted_keys(self, instance: dict[str, Any]) -> list[str]:
        """The public keys the guest would install: ``ssh-keys`` lines, unless OS Login is
        on for the instance (its metadata, else the project's), which ignores them."""
        items = {i["key"]: i.get("value", "") for i in instance["metadata"].get("items", [])}
        os_login = items.get("enable-oslogin", self.project_metadata.get("enable-oslogin", ""))
        if os_login.upper() == "TRUE":
            return []
        lines = items.get("ssh-keys", "").splitlines()
        return [line.split(":", 1)[1] for line in lines if ":" in line]

    def _publish_keys(self, instance: dict[str, Any]) -> None:
        if self.authorized_keys_file is not None:
            keys = self.accepted_keys(instance)
            self.authorized_keys_file.write_text("".join(k.strip() + "\n" for k in keys))

    # ------------------------------------------------------------- inspection
    @property
    def requests(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self._requests)

    def calls(self, method: str | None = None, contains: str = "") -> list[RecordedRequest]:
        """Recorded API requests filtered by method and a path substring."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and contains in r.path
        ]

    @property
    def instances(self) -> dict[str, dict[str, Any]]:
        """Current instances by name (operations due by now are applied first)."""
        with self.lock:
            self._tick()
            return {name: json.loads(json.dumps(i)) for (_, name), i in self._instances.items()}

    @property
    def firewalls(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            self._tick()
            copy: dict[str, dict[str, Any]] = json.loads(json.dumps(self._firewalls))
            return copy

    @property
    def disks(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            self._tick()
            return {name: dict(d) for (_, name), d in self._disks.items()}

    # ------------------------------------------------------------- dispatch
    def handle(
        self, method: str, raw_path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        parsed = urllib.parse.urlsplit(raw_path)
        path = parsed.path
        query = dict(urllib.parse.parse_qsl(parsed.query))
        if path in ("/o/oauth2/token", "/token") and method == "POST":
            return self._token(body)
        parsed_body: Any = None
        if body:
            try:
                parsed_body = json.loads(body)
            except ValueError:
                parsed_body = body.decode("utf-8", "replace")
        with self.lock:
            self._requests.append(RecordedRequest(method, path, query, parsed_body))
            try:
                self._authorize(headers)
                self._maybe_server_error(path)
                self._tick()
                return self._route(method, path, query, parsed_body)
            except ApiError as exc:
                return exc.status, exc.body()

    def _authorize(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if self.faults.auth_failure or token not in self._tokens:
            raise ApiError(
                401,
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )

    def _maybe_server_error(self, path: str) -> None:
        faults = self.faults
        if faults.server_errors > 0 and (
            faults.server_error_path is None or faults.server_error_path in path
        ):
            faults.server_errors -= 1
            raise ApiError(
                faults.server_error_status, "backendError", "Internal error. Please try again."
            )

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        match = re.match(r"^/compute/v1/projects/([^/]+)(/.*)?$", path)
        if not match:
            raise ApiError(404, "notFound", f"Not Found: {path}")
        project, rest = match.group(1), match.group(2) or ""
        rest = rest.rstrip("/")
        if rest.startswith("/global/images"):
            if project not in IMAGE_PROJECTS | {self.project}:
                raise ApiError(404, "notFound", f"The resource 'projects/{project}' was not found")
            return 200, self._images(method, project, rest)
        if project != self.project:
            raise ApiError(404, "notFound", f"The resource 'projects/{project}' was not found")
        for verb, pattern, handler in self._ROUTES:
            if verb != method:
                continue
            m = re.fullmatch(pattern, rest)
            if m:
                result = handler(self, query=query, body=body, **m.groupdict())
                return 200, result
        if any(re.fullmatch(p, rest) for _, p, _ in self._ROUTES):
            raise ApiError(405, "httpMethodNotAllowed", f"Method {method} not allowed")
        raise ApiError(404, "notFound", f"The resource 'projects/{project}{rest}' was not found")

    # ----------------------------------------------------------- links and ids
    def _link(self, rest: str, project: str | None = None) -> str:
        return f"{API_ROOT}/projects/{project or self.project}/{rest.lstrip('/')}"

    def _id(self) -> str:
        return str(next(self._ids))

    def _stable_id(self, *parts: str) -> str:
        return str(abs(hash(parts)) % 10**18)

    # ---------------------------------------------------------------- project
    def _project(self, **_: Any) -> dict[str, Any]:
        gpus_in_use = sum(
            acc.get("acceleratorCount", 0)
            for inst in self._instances.values()
            if inst["status"] != "TERMINATED"
            for acc in inst.get("guestAccelerators", [])
        )
        global_limit = 0.0 if self.faults.zero_global_gpu_quota else self.gpu_quota
        return {
            "kind": "compute#project",
            "id": self._stable_id("project", self.project),
            "name": self.project,
            "creationTimestamp": "2024-01-01T00:00:00.000+00:00",
            "commonInstanceMetadata": {
                "kind": "compute#metadata",
                "fingerprint": "zzzzzzzzzzz=",
                "items": [{"key": k, "value": v} for k, v in self.project_metadata.items()],
            },
            "quotas": [
                {"metric": "GPUS_ALL_REGIONS", "limit": global_limit, "usage": float(gpus_in_use)},
                {"metric": "CPUS_ALL_REGIONS", "limit": 64.0, "usage": 0.0},
                {"metric": "FIREWALLS", "limit": 200.0, "usage": float(len(self._firewalls))},
                {"metric": "NETWORKS", "limit": 15.0, "usage": 1.0},
            ],
            "selfLink": f"{API_ROOT}/projects/{self.project}",
            "defaultServiceAccount": "123456789-compute@developer.gserviceaccount.com",
            "defaultNetworkTier": "PREMIUM",
        }

    # ------------------------------------------------------- zones and regions
    def _zone_resource(self, zone: str) -> dict[str, Any]:
        return {
            "kind": "compute#zone",
            "id": self._stable_id("zone", zone),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": zone,
            "description": zone,
            "status": "UP",
            "region": self._link(f"regions/{region_of(zone)}"),
            "selfLink": self._link(f"zones/{zone}"),
            "availableCpuPlatforms": ["Intel Broadwell", "Intel Haswell"],
            "supportsPzs": False,
        }

    def _check_zone(self, zone: str) -> None:
        if zone not in ZONE_ACCELERATORS:
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{self.project}/zones/{zone}' was not found",
            )

    def _list(self, kind: str, items: list[dict[str, Any]], link: str) -> dict[str, Any]:
        return {"kind": f"compute#{kind}List", "id": link, "items": items, "selfLink": link}

    def _zones(self, **_: Any) -> dict[str, Any]:
        return self._list(
            "zone", [self._zone_resource(z) for z in ZONE_ACCELERATORS], self._link("zones")
        )

    def _get_zone(self, zone: str, **_: Any) -> dict[str, Any]:
        self._check_zone(zone)
        return self._zone_resource(zone)

    def _gpu_usage(self, region: str, metric: str) -> float:
        used = 0
        for inst in self._instances.values():
            if inst["status"] == "TERMINATED" or region_of(_last(inst["zone"])) != region:
                continue
            preemptible = bool(inst.get("scheduling", {}).get("preemptible")) or (
                inst.get("scheduling", {}).get("provisioningModel") == "SPOT"
            )
            for acc in inst.get("guestAccelerators", []):
                if gpu_quota_metric(_last(acc["acceleratorType"]), preemptible=preemptible) == (
                    metric
                ):
                    used += int(acc.get("acceleratorCount", 0))
        return float(used)

    def _region_quotas(self, region: str) -> list[dict[str, Any]]:
        exhausted = region in self.faults.exhausted_quota_regions
        quotas: list[dict[str, Any]] = [
            {"metric": "CPUS", "limit": 24.0, "usage": 0.0},
            {"metric": "DISKS_TOTAL_GB", "limit": 4096.0, "usage": 0.0},
            {"metric": "IN_USE_ADDRESSES", "limit": 8.0, "usage": 0.0},
        ]
        for metric in GPU_METRICS:
            usage = self._gpu_usage(region, metric)
            limit = usage if exhausted else self.gpu_quota
            quotas.append({"metric": metric, "limit": float(limit), "usage": usage})
        return quotas

    def _region_resource(self, region: str) -> dict[str, Any]:
        return {
            "kind": "compute#region",
            "id": self._stable_id("region", region),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": region,
            "description": region,
            "status": "UP",
            "zones": [self._link(f"zones/{z}") for z in REGIONS[region]],
            "quotas": self._region_quotas(region),
            "selfLink": self._link(f"regions/{region}"),
        }

    def _regions(self, **_: Any) -> dict[str, Any]:
        return self._list(
            "region", [self._region_resource(r) for r in REGIONS], self._link("regions")
        )

    def _get_region(self, region: str, **_: Any) -> dict[str, Any]:
        if region not in REGIONS:
            raise ApiError(404, "notFound", f"The resource 'regions/{region}' was not found")
        return self._region_resource(region)

    # ------------------------------------------------------------ catalog types
    def _machine_type(self, zone: str, name: str) -> dict[str, Any]:
        cpus, memory, builtin, count = MACHINE_TYPES[name]
        resource: dict[str, Any] = {
            "kind": "compute#machineType",
            "id": self._stable_id("mt", zone, name),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": name,
            "description": f"{cpus} vCPUs, {memory / 1024:g} GB RAM",
            "guestCpus": cpus,
            "memoryMb": memory,
            "imageSpaceGb": 0,
            "maximumPersistentDisks": 128,
            "maximumPersistentDisksSizeGb": "263168",
            "zone": zone,
            "selfLink": self._link(f"zones/{zone}/machineTypes/{name}"),
            "isSharedCpu": False,
        }
        if builtin:
            resource["accelerators"] = [
                {"guestAcceleratorType": builtin, "guestAcceleratorCount": count}
            ]
        return resource

    def _zone_machine_types(self, zone: str) -> list[str]:
        return [n for n in MACHINE_TYPES if zone in MACHINE_ZONES[n]]

    def _disk_type(self, zone: str, name: str) -> dict[str, Any]:
        return {
            "kind": "compute#diskType",
            "id": self._stable_id("dt", zone, name),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": name,
            "description": DISK_TYPES[name],
            "validDiskSize": "10GB-65536GB",
            "zone": self._link(f"zones/{zone}"),
            "selfLink": self._link(f"zones/{zone}/diskTypes/{name}"),
            "defaultDiskSizeGb": "500" if name == "pd-standard" else "100",
        }

    def _accelerator_type(self, zone: str, name: str) -> dict[str, Any]:
        pretty = name.replace("nvidia-", "NVIDIA ").replace("tesla-", "Tesla ").upper()
        return {
            "kind": "compute#acceleratorType",
            "id": self._stable_id("at", zone, name),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": name,
            "description": pretty,
            "zone": self._link(f"zones/{zone}"),
            "selfLink": self._link(f"zones/{zone}/acceleratorTypes/{name}"),
            "maximumCardsPerInstance": max(gpu_catalog.gce_accelerators()[name]["counts"]),
        }

    def _catalog(self, kind: str, zone: str) -> list[dict[str, Any]]:
        if kind == "machineTypes":
            return [self._machine_type(zone, n) for n in self._zone_machine_types(zone)]
        if kind == "diskTypes":
            return [self._disk_type(zone, n) for n in DISK_TYPES]
        return [self._accelerator_type(zone, n) for n in ZONE_ACCELERATORS[zone]]

    def _list_types(self, zone: str, kind: str, query: dict[str, str], **_: Any) -> dict[str, Any]:
        self._check_zone(zone)
        items = _filtered(self._catalog(kind, zone), query.get("filter"))
        return self._list(kind[:-1], items, self._link(f"zones/{zone}/{kind}"))

    def _get_type(self, zone: str, kind: str, name: str, **_: Any) -> dict[str, Any]:
        self._check_zone(zone)
        for item in self._catalog(kind, zone):
            if item["name"] == name:
                return item
        raise ApiError(
            404,
            "notFound",
            f"The resource 'projects/{self.project}/zones/{zone}/{kind}/{name}' was not found",
        )

    # -------------------------------------------------------------- aggregated
    def _aggregated(self, kind: str, query: dict[str, str], **_: Any) -> dict[str, Any]:
        items: dict[str, Any] = {}
        for zone in ZONE_ACCELERATORS:
            if kind == "instances":
                found = [i for (z, _n), i in self._instances.items() if z == zone]
            elif kind == "disks":
                found = [d for (z, _n), d in self._disks.items() if z == zone]
            else:
                found = self._catalog(kind, zone)
            found = _filtered(found, query.get("filter"))
            if found:
                items[f"zones/{zone}"] = {kind: found}
            else:
                items[f"zones/{zone}"] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": "There are no results for scope 'zones/"
                        + zone
                        + "' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                }
        link = self._link(f"aggregated/{kind}")
        return {
            "kind": f"compute#{kind[:-1]}AggregatedList",
            "id": link,
            "items": items,
            "selfLink": link,
        }

    # ------------------------------------------------------------------ images
    def _image_resource(self, project: str, name: str, family: str, desc: str) -> dict[str, Any]:
        return {
            "kind": "compute#image",
            "id": self._stable_id("image", project, name),
            "creationTimestamp": "2024-03-19T10:00:00.000-07:00",
            "name": name,
            "description": desc,
            "sourceType": "RAW",
            "status": "READY",
            "archiveSizeBytes": "1234567890",
            "diskSizeGb": "10",
            "family": family,
            "architecture": "X86_64",
            "selfLink": self._link(f"global/images/{name}", project),
        }

    def _find_image(self, project: str, *, name: str = "", family: str = "") -> dict[str, Any]:
        for proj, img, fam, desc in IMAGES:
            if proj == project and ((name and img == name) or (family and fam == family)):
                return self._image_resource(proj, img, fam, desc)
        what = f"family/{family}" if family else name
        raise ApiError(
            404, "notFound", f"The resource 'projects/{project}/global/images/{what}' was not found"
        )

    def _images(self, method: str, project: str, rest: str) -> dict[str, Any]:
        if method != "GET":
            raise ApiError(405, "httpMethodNotAllowed", f"Method {method} not allowed")
        if rest.startswith("/global/images/family/"):
            return self._find_image(project, family=_last(rest))
        if rest == "/global/images":
            items = [self._image_resource(*img) for img in IMAGES if img[0] == project]
            return self._list("image", items, self._link("global/images", project))
        return self._find_image(project, name=_last(rest))

    def _resolve_image(self, source: str) -> dict[str, Any]:
        """An insert's ``sourceImage`` (full or partial URL, image or family) -> image."""
        path = source.split("/compute/v1/", 1)[-1]
        match = re.match(r"^(?:projects/([^/]+)/)?global/images/(family/)?([^/]+)$", path)
        if not match:
            raise ApiError(400, "invalid", f"Invalid value for field 'sourceImage': '{source}'")
        project = match.group(1) or self.project
        if match.group(2):
            return self._find_image(project, family=match.group(3))
        return self._find_image(project, name=match.group(3))

    # ---------------------------------------------------------------- networks
    def _network(self, name: str = "default", **_: Any) -> dict[str, Any]:
        if name != "default":
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{self.project}/global/networks/{name}' was not found",
            )
        return {
            "kind": "compute#network",
            "id": self._stable_id("network", name),
            "creationTimestamp": "2024-01-01T00:00:00.000+00:00",
            "name": name,
            "description": "Default network for the project",
            "selfLink": self._link(f"global/networks/{name}"),
            "autoCreateSubnetworks": True,
            "subnetworks": [self._link(f"regions/{r}/subnetworks/{name}") for r in REGIONS],
            "routingConfig": {"routingMode": "REGIONAL"},
        }

    def _networks(self, **_: Any) -> dict[str, Any]:
        return self._list("network", [self._network()], self._link("global/networks"))

    # --------------------------------------------------------------- firewalls
    def _firewalls_list(self, query: dict[str, str], **_: Any) -> dict[str, Any]:
        items = _filtered(list(self._firewalls.values()), query.get("filter"))
        return self._list("firewall", items, self._link("global/firewalls"))

    def _get_firewall(self, name: str, **_: Any) -> dict[str, Any]:
        if name not in self._firewalls:
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{self.project}/global/firewalls/{name}' was not found",
            )
        return self._firewalls[name]

    def _insert_firewall(self, body: Any, **_: Any) -> dict[str, Any]:
        if isinstance(body, dict):
            _check_schema("compute.firewalls.insert", body)
        if not isinstance(body, dict) or not NAME_RE.match(str(body.get("name", ""))):
            raise ApiError(400, "invalid", "Invalid value for field 'resource.name'")
        name = body["name"]
        if name in self._firewalls:
            raise ApiError(
                409,
                "alreadyExists",
                f"The resource 'projects/{self.project}/global/firewalls/{name}' already exists",
            )
        self._network(_last(body.get("network", "global/networks/default")))
        if not body.get("allowed") and not body.get("denied"):
            raise ApiError(400, "invalid", "Required field 'allowed' not specified")
        firewall = {
            "kind": "compute#firewall",
            "id": self._id(),
            "creationTimestamp": _now_rfc3339(),
            "name": name,
            "description": body.get("description", ""),
            "network": self._link("global/networks/" + _last(body.get("network", "default"))),
            "priority": body.get("priority", 1000),
            "direction": body.get("direction", "INGRESS"),
            "allowed": body.get("allowed", []),
            "logConfig": {"enable": False},
            "disabled": False,
            "selfLink": self._link(f"global/firewalls/{name}"),
        }
        for key in ("sourceRanges", "targetTags", "sourceTags", "denied"):
            if key in body:
                firewall[key] = body[key]
        if not any(k in body for k in ("sourceRanges", "sourceTags", "sourceServiceAccounts")):
            # GCE's default source is the world only when the rule names no source at all:
            # a rule with sourceTags alone admits those instances and nobody else.
            firewall["sourceRanges"] = ["0.0.0.0/0"]

        def finish() -> None:
            self._firewalls[name] = firewall

        return self._operation("insert", firewall["selfLink"], firewall["id"], None, finish)

    def _delete_firewall(self, name: str, **_: Any) -> dict[str, Any]:
        firewall = self._get_firewall(name)

        def finish() -> None:
            self._firewalls.pop(name, None)

        return self._operation("delete", firewall["selfLink"], firewall["id"], None, finish)

    # -------------------------------------------------------------- operations
    def _operation(
        self,
        kind: str,
        target: str,
        target_id: str,
        zone: str | None,
        finish: Callable[[], dict[str, Any] | None],
    ) -> dict[str, Any]:
        now = time.time()
        name = f"operation-{int(now * 1000)}-{self._id()}"
        scope = f"zones/{zone}" if zone else "global"
        resource: dict[str, Any] = {
            "kind": "compute#operation",
            "id": self._id(),
            "name": name,
            "operationType": kind,
            "targetLink": target,
            "targetId": target_id,
            "status": "PENDING",
            "user": "orchestrate-test@example.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": _now_rfc3339(),
            "selfLink": self._link(f"{scope}/operations/{name}"),
        }
        if zone:
            resource["zone"] = self._link(f"zones/{zone}")
        op = _Operation(resource, now, now + self.faults.operation_latency, finish)
        self._operations[name] = op
        self._advance(op)
        return dict(op.resource)

    def _advance(self, op: _Operation) -> None:
        now = time.time()
        if op.finished:
            return
        if now >= op.done_at:
            error = op.finish()
            op.finished = True
            if self._hosts:
                self._enforce_firewalls()
            op.resource.update(
                status="DONE", progress=100, startTime=_now_rfc3339(), endTime=_now_rfc3339()
            )
            if error:
                op.resource.update(error)
        elif now >= op.created + (op.done_at - op.created) / 2:
            op.resource.update(status="RUNNING", progress=50, startTime=_now_rfc3339())

    def _tick(self) -> None:
        for op in list(self._operations.values()):
            self._advance(op)
        for (zone, name), index in list(self._host_of.items()):
            host = self._hosts[index]
            action = host.take_power_request()
            inst = self._instances.get((zone, name))
            if action is None or inst is None or inst["status"] != "RUNNING":
                continue
            host.power_off()
            if action == "reboot":
                host.power_on()
            else:
                self._terminate(zone, name, inst)
                self._enforce_firewalls()

    def _terminate(self, zone: str, name: str, inst: dict[str, Any]) -> None:
        """The instance is stopped: TERMINATED, its ephemeral address released."""
        inst["status"] = "TERMINATED"
        for config in inst["networkInterfaces"][0]["accessConfigs"]:
            released = config.pop("natIP", None)
            if released:
                self._released_ips[(zone, name)] = released

    def _get_operation(self, name: str, zone: str | None = None, **_: Any) -> dict[str, Any]:
        op = self._operations.get(name)
        if op is None:
            scope = f"zones/{zone}" if zone else "global"
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{self.project}/{scope}/operations/{name}' was not found",
            )
        self._advance(op)
        return dict(op.resource)

    def _wait_operation(self, name: str, zone: str | None = None, **_: Any) -> dict[str, Any]:
        """``operations/NAME/wait``: returns when DONE or after a bounded wait (2 s here)."""
        op = self._operations.get(name)
        deadline = time.time() + 2.0
        while op is not None and not op.finished and time.time() < deadline:
            self.lock.release()
            try:
                time.sleep(0.01)
            finally:
                self.lock.acquire()
            self._advance(op)
        return self._get_operation(name, zone)

    # --------------------------------------------------------------- instances
    def _instance(self, zone: str, name: str) -> dict[str, Any]:
        self._check_zone(zone)
        inst = self._instances.get((zone, name))
        if inst is None:
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                "was not found",
            )
        return inst

    def _list_instances(self, zone: str, query: dict[str, str], **_: Any) -> dict[str, Any]:
        self._check_zone(zone)
        items = [i for (z, _n), i in self._instances.items() if z == zone]
        items = _filtered(items, query.get("filter"))
        return self._list("instance", items, self._link(f"zones/{zone}/instances"))

    def _get_instance(self, zone: str, name: str, **_: Any) -> dict[str, Any]:
        return self._instance(zone, name)

    def _validate_labels(self, labels: Any, field_name: str) -> dict[str, str]:
        if labels is None:
            return {}
        if not isinstance(labels, dict) or len(labels) > 64:
            raise ApiError(400, "invalid", f"Invalid value for field '{field_name}'")
        for key, value in labels.items():
            if not LABEL_KEY_RE.match(str(key)) or not LABEL_VALUE_RE.match(str(value)):
                raise ApiError(
                    400,
                    "invalid",
                    f"Invalid value for field '{field_name}': label {key!r}={value!r}",
                )
        return dict(labels)

    def _insert_instance(self, zone: str, body: Any, **_: Any) -> dict[str, Any]:
        self._check_zone(zone)
        if not isinstance(body, dict):
            raise ApiError(400, "required", "Required field 'resource' not specified")
        _check_schema("compute.instances.insert", body)
        name = str(body.get("name", ""))
        if not NAME_RE.match(name):
            raise ApiError(
                400,
                "invalid",
                f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
            )
        if (zone, name) in self._instances:
            raise ApiError(
                409,
                "alreadyExists",
                f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                "already exists",
            )
        machine = _last(str(body.get("machineType", "")))
        if machine not in self._zone_machine_types(zone) or _zone_in(
            str(body["machineType"])
        ) not in (None, zone):
            raise ApiError(
                400,
                "invalid",
                f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'. "
                f"Machine type with name '{machine}' does not exist in zone '{zone}'.",
            )
        accelerators = body.get("guestAccelerators") or []
        self._check_pair(machine, accelerators)
        if self.faults.missing_service_account_user and body.get("serviceAccounts"):
            email = str(body["serviceAccounts"][0].get("email", "default"))
            if email == "default":
                email = self._project()["defaultServiceAccount"]
            raise ApiError(400, "badRequest", SERVICE_ACCOUNT_USER_MESSAGE.format(email=email))
        builtin = MACHINE_TYPES[machine]
        if builtin[2] is not None:  # the type carries its GPUs; the instance lists them
            accelerators = [{"acceleratorType": builtin[2], "acceleratorCount": builtin[3]}]
        scheduling = dict(body.get("scheduling") or {})
        gpu_count = 0
        for index, acc in enumerate(accelerators):
            acc_name = _last(str(acc.get("acceleratorType", "")))
            if acc_name not in ZONE_ACCELERATORS[zone]:
                raise ApiError(
                    400,
                    "invalid",
                    f"Invalid value for field 'resource.guestAccelerators[{index}]"
                    f".acceleratorType': '{acc.get('acceleratorType')}'. Accelerator type "
                    f"'{acc_name}' does not exist in zone '{zone}'.",
                )
            gpu_count += int(acc.get("acceleratorCount", 0))
        if accelerators and scheduling.get("onHostMaintenance", "MIGRATE") != "TERMINATE":
            raise ApiError(
                400,
                "invalid",
                "Instances with guest accelerators do not support live migration.",
            )
        disks = body.get("disks") or []
        boot = [d for d in disks if d.get("boot")]
        if len(boot) != 1 or "initializeParams" not in boot[0]:
            raise ApiError(400, "invalid", "Exactly one boot disk with initializeParams needed")
        params = boot[0]["initializeParams"]
        image = self._resolve_image(str(params.get("sourceImage", "")))
        disk_type = _last(str(params.get("diskType", "pd-standard")))
        if disk_type not in DISK_TYPES:
            raise ApiError(400, "invalid", f"Invalid value for field 'diskType': '{disk_type}'")
        size = int(params.get("diskSizeGb") or image["diskSizeGb"])
        if size < int(image["diskSizeGb"]):
            raise ApiError(400, "invalid", "Requested disk size cannot be smaller than the image")
        labels = self._validate_labels(body.get("labels"), "resource.labels")
        nics = body.get("networkInterfaces") or [{}]
        network = _last(str(nics[0].get("network", "global/networks/default")))
        self._network(network)
        wants_nat = bool(nics[0].get("accessConfigs"))

        if zone in self.faults.stockout_zones and self.faults.stockout_on_insert:
            raise ApiError(
                503,
                "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                f"The zone 'projects/{self.project}/zones/{zone}' does not have enough "
                "resources available to fulfill the request.  '(resource type:compute)'.",
            )

        disk_labels = self._validate_labels(params.get("labels"), "initializeParams.labels")
        host = self._take_host(zone, name) if self._hosts else None  # nothing raises after
        nat_ip = host.external_address if host else self.instance_addresses[0]
        network_ip = host.internal_address if host else f"10.128.0.{len(self._instances) % 250 + 2}"
        disk_name = str(params.get("diskName") or name)
        instance_link = self._link(f"zones/{zone}/instances/{name}")
        disk_link = self._link(f"zones/{zone}/disks/{disk_name}")
        access_configs: list[dict[str, Any]] = []
        if wants_nat:
            access_configs.append(
                {
                    "kind": "compute#accessConfig",
                    "type": "ONE_TO_ONE_NAT",
                    "name": nics[0]["accessConfigs"][0].get("name", "External NAT"),
                    "natIP": nat_ip,
                    "networkTier": nics[0]["accessConfigs"][0].get("networkTier", "PREMIUM"),
                }
            )
        metadata = body.get("metadata") or {}
        instance: dict[str, Any] = {
            "kind": "compute#instance",
            "id": self._id(),
            "creationTimestamp": _now_rfc3339(),
            "name": name,
            "description": body.get("description", ""),
            "tags": {
                "items": list((body.get("tags") or {}).get("items", [])),
                "fingerprint": "42WmSpB8rSM=",
            },
            "machineType": self._link(f"zones/{zone}/machineTypes/{machine}"),
            "status": "PROVISIONING",
            "zone": self._link(f"zones/{zone}"),
            "canIpForward": False,
            "networkInterfaces": [
                {
                    "kind": "compute#networkInterface",
                    "network": self._link(f"global/networks/{network}"),
                    "subnetwork": self._link(f"regions/{region_of(zone)}/subnetworks/{network}"),
                    "networkIP": network_ip,
                    "name": "nic0",
                    "accessConfigs": access_configs,
                    "fingerprint": "ZYdx-5Z3ZdQ=",
                }
            ],
            "disks": [
                {
                    "kind": "compute#attachedDisk",
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "source": disk_link,
                    "deviceName": boot[0].get("deviceName", disk_name),
                    "index": 0,
                    "boot": True,
                    "autoDelete": bool(boot[0].get("autoDelete", True)),
                    "interface": "SCSI",
                    "diskSizeGb": str(size),
                }
            ],
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": "ffffffffff=",
                "items": list(metadata.get("items", [])),
            },
            "serviceAccounts": list(body.get("serviceAccounts", [])),
            "selfLink": instance_link,
            "scheduling": {
                "onHostMaintenance": scheduling.get("onHostMaintenance", "MIGRATE"),
                "automaticRestart": scheduling.get("automaticRestart", True),
                "preemptible": scheduling.get("preemptible", False),
                **{k: v for k, v in scheduling.items() if k not in ("preemptible",)},
            },
            "cpuPlatform": "Intel Haswell",
            "labels": labels,
            "labelFingerprint": "42WmSpB8rSM=",
            "startRestricted": False,
            "deletionProtection": False,
            "fingerprint": "abcdefghijk=",
        }
        if accelerators:
            instance["guestAccelerators"] = [
                {
                    "acceleratorType": self._link(
                        f"zones/{zone}/acceleratorTypes/{_last(str(a['acceleratorType']))}"
                    ),
                    "acceleratorCount": int(a.get("acceleratorCount", 0)),
                }
                for a in accelerators
            ]
        disk = {
            "kind": "compute#disk",
            "id": self._id(),
            "creationTimestamp": _now_rfc3339(),
            "name": disk_name,
            "sizeGb": str(size),
            "zone": self._link(f"zones/{zone}"),
            "status": "READY",
            "selfLink": disk_link,
            "sourceImage": image["selfLink"],
            "sourceImageId": image["id"],
            "type": self._link(f"zones/{zone}/diskTypes/{disk_type}"),
            "labels": disk_labels,
            "users": [instance_link],
        }
        error = self._insert_error(zone, instance, gpu_count)
        self._instances[(zone, name)] = instance

        def finish() -> dict[str, Any] | None:
            if error is not None:
                self._instances.pop((zone, name), None)
                self._free_host(zone, name, wipe=False)
                return error
            instance["status"] = "RUNNING"
            self._disks[(zone, disk_name)] = disk
            self._publish_keys(instance)
            return None

        return self._operation("insert", instance_link, instance["id"], zone, finish)

    def _check_pair(self, machine: str, accelerators: list[dict[str, Any]]) -> None:
        """GCE's machine-type/GPU rule: T4, V100, P100 and P4 attach to N1 types; g2, a2 and
        a3 types carry their GPUs and take no ``guestAccelerators``."""
        for acc in accelerators:
            name = _last(str(acc.get("acceleratorType", "")))
            builtin = MACHINE_TYPES[machine][2]
            family = machine.split("-", 1)[0]
            attach_to = gpu_catalog.gce_accelerators().get(name, {}).get("attach_to", [])
            if builtin is not None or family not in attach_to:
                raise ApiError(
                    400,
                    "badRequest",
                    f"[{machine}, {name}] features are not compatible for creating instance.",
                )

    def _insert_error(
        self, zone: str, instance: dict[str, Any], gpu_count: int
    ) -> dict[str, Any] | None:
        """The error the insert operation will end with, decided when it is accepted."""
        region = region_of(zone)
        if zone in self.faults.stockout_zones:
            message = (
                f"The zone 'projects/{self.project}/zones/{zone}' does not have enough "
                "resources available to fulfill the request.  Try a different zone, or try "
                "again later."
            )
            return _op_error("ZONE_RESOURCE_POOL_EXHAUSTED", message, 503, "SERVICE UNAVAILABLE")
        if not gpu_count:
            return None
        project_quota = {q["metric"]: q for q in self._project()["quotas"]}["GPUS_ALL_REGIONS"]
        if project_quota["usage"] + gpu_count > project_quota["limit"]:
            message = (
                f"Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: {project_quota['limit']:.1f} globally."
            )
            return _op_error(
                "QUOTA_EXCEEDED",
                message,
                403,
                "FORBIDDEN",
                quota_info={
                    "metricName": "compute.googleapis.com/gpus_all_regions",
                    "limitName": "GPUS-ALL-REGIONS-per-project",
                    "limit": project_quota["limit"],
                },
            )
        scheduling = instance["scheduling"]
        preemptible = bool(scheduling.get("preemptible")) or (
            scheduling.get("provisioningModel") == "SPOT"
        )
        quotas = {q["metric"]: q for q in self._region_quotas(region)}
        for acc in instance.get("guestAccelerators", []):
            metric = gpu_quota_metric(_last(acc["acceleratorType"]), preemptible=preemptible)
            quota = quotas.get(metric, {"limit": self.gpu_quota, "usage": 0.0})
            if quota["usage"] + acc["acceleratorCount"] > quota["limit"]:
                message = (
                    f"Quota '{metric}' exceeded.  Limit: {quota['limit']:.1f} in region {region}."
                )
                return _op_error(
                    "QUOTA_EXCEEDED",
                    message,
                    403,
                    "FORBIDDEN",
                    quota_info={
                        "metricName": "compute.googleapis.com/" + metric.lower(),
                        "limitName": metric.replace("_", "-") + "-per-project-region",
                        "dimensions": {"region": region},
                        "limit": quota["limit"],
                    },
                )
        return None

    def _delete_instance(self, zone: str, name: str, **_: Any) -> dict[str, Any]:
        inst = self._instance(zone, name)
        inst["status"] = "STOPPING"

        def finish() -> None:
            self._instances.pop((zone, name), None)
            self._free_host(zone, name, wipe=True)
            for disk in inst.get("disks", []):
                if disk.get("autoDelete"):
                    self._disks.pop((zone, _last(disk["source"])), None)

        return self._operation("delete", inst["selfLink"], inst["id"], zone, finish)

    def _stop_instance(self, zone: str, name: str, **_: Any) -> dict[str, Any]:
        inst = self._instance(zone, name)
        if inst["status"] != "TERMINATED":
            inst["status"] = "STOPPING"

        def finish() -> None:
            host = self.host_of(zone, name)
            if host is not None and inst["status"] != "TERMINATED":
                host.power_off()
            self._terminate(zone, name, inst)

        return self._operation("stop", inst["selfLink"], inst["id"], zone, finish)

    def _start_instance(self, zone: str, name: str, **_: Any) -> dict[str, Any]:
        inst = self._instance(zone, name)
        if inst["status"] == "TERMINATED":
            inst["status"] = "STAGING"

        def finish() -> None:
            host = self.host_of(zone, name)
            if host is not None and inst["status"] != "RUNNING":
                host.power_on()
            inst["status"] = "RUNNING"
            previous = self._released_ips.pop((zone, name), None)
            for config in inst["networkInterfaces"][0]["accessConfigs"]:
                if "natIP" not in config:
                    config["natIP"] = self._start_address(previous)

        return self._operation("start", inst["selfLink"], inst["id"], zone, finish)

    def _start_address(self, previous: str | None) -> str:
        """The address a started instance gets: the one it had, or the next one in
        ``instance_addresses`` when ``faults.change_ip_on_start`` is on."""
        addresses = self.instance_addresses
        if previous is None or previous not in addresses:
            return previous or addresses[0]
        if not self.faults.change_ip_on_start:
            return previous
        return addresses[(addresses.index(previous) + 1) % len(addresses)]

    def _set_labels(self, zone: str, name: str, body: Any, **_: Any) -> dict[str, Any]:
        inst = self._instance(zone, name)
        labels = self._validate_labels((body or {}).get("labels"), "labels")

        def finish() -> None:
            inst["labels"] = labels

        return self._operation("setLabels", inst["selfLink"], inst["id"], zone, finish)

    # ------------------------------------------------------------------- disks
    def _list_disks(self, zone: str, query: dict[str, str], **_: Any) -> dict[str, Any]:
        self._check_zone(zone)
        items = _filtered(
            [d for (z, _n), d in self._disks.items() if z == zone], query.get("filter")
        )
        return self._list("disk", items, self._link(f"zones/{zone}/disks"))

    def _get_disk(self, zone: str, name: str, **_: Any) -> dict[str, Any]:
        self._check_zone(zone)
        disk = self._disks.get((zone, name))
        if disk is None:
            raise ApiError(
                404,
                "notFound",
                f"The resource 'projects/{self.project}/zones/{zone}/disks/{name}' was not found",
            )
        return disk

    # ------------------------------------------------------------------ tokens
    def _token(self, body: bytes) -> tuple[int, dict[str, Any]]:
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        grant = form.get("grant_type", "")
        with self.lock:
            self._requests.append(RecordedRequest("POST", "/token", {}, {"grant_type": grant}))
            if self.faults.server_errors > 0 and self.faults.server_error_path in (None, "/token"):
                self.faults.server_errors -= 1
                return self.faults.server_error_status, {"error": "internal_failure"}
            if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                principal, refusal = self._check_jwt(form.get("assertion", ""))
            elif grant == "refresh_token":
                principal, refusal = self._check_refresh(form)
            else:
                return 400, {"error": "unsupported_grant_type", "error_description": grant}
            if self.faults.auth_failure:
                refusal = (
                    "Invalid JWT Signature."
                    if grant != "refresh_token"
                    else ("Token has been expired or revoked.")
                )
            if refusal:
                return 400, {"error": "invalid_grant", "error_description": refusal}
            token = f"ya29.fake-{self._id()}"
            self._tokens[token] = principal
            return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _check_jwt(self, assertion: str) -> tuple[str, str | None]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
        from cryptography.hazmat.primitives.hashes import SHA256

        parts = assertion.split(".")
        if len(parts) != 3:
            return "", "Invalid JWT: Token must be a short-lived token."
        try:
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError:
            return "", "Invalid JWT Signature."
        email = str(claims.get("iss", ""))
        key = self._service_accounts.get(email)
        if key is None:
            return email, "Invalid grant: account not found"
        if int(claims.get("exp", 0)) < time.time():
            return email, "Invalid JWT: Token must be a short-lived token (60 minutes)."
        try:
            key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), PKCS1v15(), SHA256())
        except InvalidSignature:
            return email, "Invalid JWT Signature."
        return email, None

    def _check_refresh(self, form: dict[str, str]) -> tuple[str, str | None]:
        expected = self._refresh_tokens.get(form.get("refresh_token", ""))
        if expected is None or expected != (form.get("client_id"), form.get("client_secret")):
            return "", "Token has been expired or revoked."
        return expected[0], None

    # ------------------------------------------------------------------ routes
    _Z = r"/zones/(?P<zone>[a-z0-9-]+)"
    _N = r"(?P<name>[^/]+)"
    _ROUTES: tuple[tuple[str, str, Callable[..., dict[str, Any]]], ...] = (
        ("GET", r"", _project),
        ("GET", r"/zones", _zones),
        ("GET", _Z, _get_zone),
        ("GET", r"/regions", _regions),
        ("GET", r"/regions/(?P<region>[a-z0-9-]+)", _get_region),
        ("GET", _Z + r"/(?P<kind>machineTypes|diskTypes|acceleratorTypes)", _list_types),
        ("GET", _Z + r"/(?P<kind>machineTypes|diskTypes|acceleratorTypes)/" + _N, _get_type),
        (
            "GET",
            r"/aggregated/(?P<kind>machineTypes|diskTypes|acceleratorTypes|instances|disks)",
            _aggregated,
        ),
        ("GET", r"/global/networks", _networks),
        ("GET", r"/global/networks/" + _N, _network),
        ("GET", r"/global/firewalls", _firewalls_list),
        ("POST", r"/global/firewalls", _insert_firewall),
        ("GET", r"/global/firewalls/" + _N, _get_firewall),
        ("DELETE", r"/global/firewalls/" + _N, _delete_firewall),
        ("GET", r"/global/operations/" + _N, _get_operation),
        ("POST", r"/global/operations/" + _N + "/wait", _wait_operation),
        ("GET", _Z + r"/instances", _list_instances),
        ("POST", _Z + r"/instances", _insert_instance),
        ("GET", _Z + r"/instances/" + _N, _get_instance),
        ("DELETE", _Z + r"/instances/" + _N, _delete_instance),
        ("POST", _Z + r"/instances/" + _N + "/stop", _stop_instance),
        ("POST", _Z + r"/instances/" + _N + "/start", _start_instance),
        ("POST", _Z + r"/instances/" + _N + "/setLabels", _set_labels),
        ("GET", _Z + r"/disks", _list_disks),
        ("GET", _Z + r"/disks/" + _N, _get_disk),
        ("GET", _Z + r"/operations/" + _N, _get_operation),
        ("POST", _Z + r"/operations/" + _N + "/wait", _wait_operation),
    )


def _check_schema(method_id: str, body: dict[str, Any]) -> None:
    """400 INVALID_ARGUMENT, as Google answers a body that breaks the discovery document."""
    try:
        discovery.validate(method_id, body)
    except discovery.SchemaViolation as exc:
        raise ApiError(400, "invalid", exc.message, field=exc.field) from None


def _op_error(
    code: str,
    message: str,
    http_status: int,
    http_message: str,
    *,
    quota_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields a failed operation carries, shaped like GCE's."""
    error: dict[str, Any] = {"code": code, "message": message}
    if quota_info is not None:
        error["errorDetails"] = [{"quotaInfo": quota_info}]
    return {
        "error": {"errors": [error]},
        "httpErrorStatusCode": http_status,
        "httpErrorMessage": http_message,
    }


_FILTER_TERM = re.compile(r'([A-Za-z_][\w.-]*)\s*(=|!=|\beq\b|\bne\b)\s*"?([^"\s)]*)"?')


def _filtered(items: list[dict[str, Any]], expression: str | None) -> list[dict[str, Any]]:
    """Apply a GCE list ``filter`` (``labels.k = "v"``, ``name = x``, ``name eq re``;
    several terms are ANDed), enough for what a client of this fake sends."""
    if not expression:
        return items
    terms = _FILTER_TERM.findall(expression)

    def value_of(item: dict[str, Any], dotted: str) -> str:
        current: Any = item
        for part in dotted.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if isinstance(current, bool):
            return str(current).lower()
        return "" if current is None else str(current)

    def keep(item: dict[str, Any]) -> bool:
        for field_name, op, expected in terms:
            actual = value_of(item, field_name)
            if op in ("eq", "ne"):
                hit = re.fullmatch(expected, actual) is not None
                if (op == "eq") != hit:
                    return False
            elif (actual == expected) != (op == "="):
                return False
        return True

    return [i for i in items if keep(i)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK (~40 ms per request on loopback).
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake: GceFake = self.server.fake  # type: ignore[attr-defined]
        status, payload = fake.handle(self.command, self.path, body, headers)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line: tests read ``GceFake.requests`` instead."""
