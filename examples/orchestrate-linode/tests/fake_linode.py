"""A small stateful fake of the Linode v4 API on 127.0.0.1, enough for the provider's calls.

Served over real HTTP, so the provider's real requests reach it: bearer-token auth,
paginated lists (``page``/``pages``/``results``), instances that go ``provisioning`` ->
``running`` on the next read, ``shutdown`` -> ``offline``, ``boot`` -> ``running``, delete.
Errors use Linode's shape, ``{"errors": [{"reason": ..., "field": ...}]}``.

`refuse` makes instance creation in a region fail as Linode does for a bad field, to drive
the failover test; `requests` logs (method, path, JSON body) for assertions. `address` is
the IPv4 address every Linode gets (a machine standing in for it, such as the test bed's
sshd on 127.0.0.1); by default one from the documentation range.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

TOKEN = "fake-linode-token"

REGIONS = [
    {
        "id": "us-east",
        "country": "us",
        "label": "Newark, NJ",
        "capabilities": ["Linodes", "GPU Linodes", "Metadata"],
    },
    {
        "id": "eu-central",
        "country": "de",
        "label": "Frankfurt",
        "capabilities": ["Linodes", "GPU Linodes", "Metadata"],
    },
    {
        "id": "ap-south",
        "country": "sg",
        "label": "Singapore",
        "capabilities": ["Linodes", "GPU Linodes"],
    },
    {"id": "us-west", "country": "us", "label": "Fremont, CA", "capabilities": ["Linodes"]},
]

TYPES = [
    {
        "id": "g6-standard-2",
        "label": "Linode 4GB",
        "class": "standard",
        "gpus": 0,
        "memory": 4096,
        "disk": 81920,
        "vcpus": 2,
        "price": {"hourly": 0.036, "monthly": 24},
    },
    {
        "id": "g1-gpu-rtx6000-1",
        "label": "Dedicated 32GB + RTX6000 GPU x1",
        "class": "gpu",
        "gpus": 1,
        "memory": 32768,
        "disk": 655360,
        "vcpus": 8,
        "price": {"hourly": 1.5, "monthly": 1000},
    },
    {
        "id": "g1-gpu-rtx6000-2",
        "label": "Dedicated 64GB + RTX6000 GPU x2",
        "class": "gpu",
        "gpus": 2,
        "memory": 65536,
        "disk": 1310720,
        "vcpus": 16,
        "price": {"hourly": 3.0, "monthly": 2000},
    },
]


@dataclass
class FakeLinode:
    endpoint: str = ""
    address: str | None = None
    instances: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    refuse: dict[str, tuple[str, str]] = field(default_factory=dict)
    next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None

    def calls(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.requests if m == method and p == path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------ handlers
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            parts = [p for p in path.split("/") if p][1:]  # drop "v4"
            if parts == ["regions"] and method == "GET":
                return 200, page([{**r, "status": "ok", "resolvers": {}} for r in REGIONS])
            if parts == ["linode", "types"] and method == "GET":
                return 200, page([_type(t) for t in TYPES])
            if parts == ["linode", "instances"] and method == "GET":
                return 200, page([self._advance(i) for i in self.instances.values()])
            if parts == ["linode", "instances"] and method == "POST":
                return self._create(body)
            if len(parts) >= 3 and parts[:2] == ["linode", "instances"]:
                instance = self.instances.get(int(parts[2])) if parts[2].isdigit() else None
                if instance is None:
                    return 404, error("Not found")
                action = parts[3] if len(parts) > 3 else None
                if method == "GET" and action is None:
                    return 200, self._advance(instance)
                if method == "DELETE" and action is None:
                    del self.instances[instance["id"]]
                    return 200, {}
                if method == "POST" and action == "shutdown":
                    instance["status"] = "offline"
                    return 200, {}
                if method == "POST" and action == "boot":
                    instance["status"] = "booting"
                    return 200, {}
            return 404, error("Not found")

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        for key in ("region", "type", "image", "root_pass", "label"):
            if not body.get(key):
                return 400, error(f"{key} is required", key)
        if body["region"] in self.refuse:
            reason, bad = self.refuse[body["region"]]
            return 400, error(reason, bad)
        if body["region"] not in {r["id"] for r in REGIONS}:
            return 400, error("region is not valid", "region")
        if any(i["label"] == body["label"] for i in self.instances.values()):
            return 400, error("Label must be unique among your Linodes", "label")
        self.next_id += 1
        instance = {
            "id": self.next_id,
            "label": body["label"],
            "status": "provisioning",
            "region": body["region"],
            "type": body["type"],
            "image": body["image"],
            "ipv4": [self.address or f"203.0.113.{self.next_id % 250 + 1}"],
            "ipv6": "2001:db8::1/128",
            "tags": body.get("tags", []),
            "hypervisor": "kvm",
            "specs": {},
            "alerts": {},
            "backups": {"enabled": False},
            "watchdog_enabled": True,
            "created": "2024-05-01T12:00:00",
            "updated": "2024-05-01T12:00:00",
            "_authorized_keys": body.get("authorized_keys", []),
            "_user_data": (body.get("metadata") or {}).get("user_data"),
        }
        self.instances[instance["id"]] = instance
        return 200, public(instance)

    def _advance(self, instance: dict[str, Any]) -> dict[str, Any]:
        """Each read moves a transitional state on, as time would."""
        instance["status"] = {"provisioning": "running", "booting": "running"}.get(
            instance["status"], instance["status"]
        )
        return public(instance)


def public(instance: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in instance.items() if not k.startswith("_")}


def _type(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "network_out": 1000, "transfer": 1000, "addons": {}, "successor": None}


def page(items: list[Any]) -> dict[str, Any]:
    return {"data": items, "page": 1, "pages": 1, "results": len(items)}


def error(reason: str, bad_field: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"reason": reason}
    if bad_field:
        entry["field"] = bad_field
    return {"errors": [entry]}


def start_fake_linode(address: str | None = None) -> FakeLinode:
    fake = FakeLinode(address=address)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, error("Invalid Token"))
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = fake.handle(self.command, urlsplit(self.path).path, body)
            self._send(status, answer)

        def _send(self, status: int, answer: Any) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake._server = server
    fake.endpoint = f"http://127.0.0.1:{server.server_port}"
    return fake
