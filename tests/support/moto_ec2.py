"""moto's EC2 on a loopback port, with the few things a provider test needs on top of it.

The server is moto's own WSGI app (what ``moto_server`` runs) served by werkzeug on
127.0.0.1 in a thread, so the provider's libcloud driver talks real signed HTTP to it. A thin
WSGI layer in front adds, for tests only:

- fault injection: answer a matching action with an EC2 error document (moto never runs out
  of capacity or vCPU quota);
- a log of the actions received, to assert what was (or was not) sent;
- refusals where moto is more permissive than EC2 for what the AWS provider sends
  (`ec2_refusal`): moto runs any instance type, even one EC2 retired (p2, p3, g3) or never
  had; EC2 answers ``Unsupported`` and ``InvalidParameterValue``.

- the response shim for moto's XML namespace, for error documents: real EC2 sends
  ``<Response><Errors><Error><Code>...`` without a namespace, moto adds
  ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15"``, and libcloud's error parser (which looks
  for ``Errors/Error`` without one) then reports an empty message instead of the error code.

Successful answers pass unchanged: the provider reads them namespace-agnostically (moto's
namespace also lacks the trailing slash that libcloud's own object parsers expect).

Images: moto's default catalogue has no Ubuntu 22.04, so `add_image` puts images straight into
the in-process backend (owner, name, architecture, creation date as Canonical publishes them).
"""

from __future__ import annotations

import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from orchestrate.core.api import gpu_catalog
from werkzeug.serving import make_server

ACCOUNT = "123456789012"
CANONICAL = "099720109477"


@dataclass
class Fault:
    """Answer `action` with an EC2 error while `when(params)` holds, `times` times at most."""

    action: str
    code: str
    message: str
    status: int = 400
    when: Callable[[dict[str, str]], bool] = lambda params: True
    times: int = 1_000_000
    hits: int = 0


@dataclass
class MotoEc2:
    endpoint: str
    region: str
    _server: Any
    _thread: threading.Thread
    faults: list[Fault] = field(default_factory=list)
    actions: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    # ------------------------------------------------------------ state
    def backend(self, region: str | None = None) -> Any:
        from moto.ec2.models import ec2_backends

        return ec2_backends[ACCOUNT][region or self.region]

    def reset(self) -> None:
        """Forget every resource, fault and logged action (moto's own reset endpoint)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.faults.clear()
        self.actions.clear()

    def add_image(
        self,
        name: str,
        *,
        owner: str = CANONICAL,
        architecture: str = "x86_64",
        created: str = "2024-03-01T00:00:00",
        region: str | None = None,
    ) -> str:
        """Register an EBS-backed HVM image and return its id."""
        from moto.ec2.models.amis import Ami
        from moto.ec2.utils import random_ami_id

        backend = self.backend(region)
        ami_id = random_ami_id()
        backend.amis[ami_id] = Ami(
            backend,
            ami_id=ami_id,
            name=name,
            owner_id=owner,
            public=True,
            architecture=architecture,
            virtualization_type="hvm",
            root_device_type="ebs",
            root_device_name="/dev/sda1",
            creation_date=datetime.fromisoformat(created).replace(tzinfo=timezone.utc),
        )
        return ami_id

    def zone_of_subnet(self, subnet_id: str) -> str:
        return str(self.backend().get_subnet(subnet_id).availability_zone)

    def sent(self, action: str) -> list[dict[str, str]]:
        return [params for name, params in self.actions if name == action]

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


#: Families EC2 no longer runs (p2 in 2024; p3, p3dn, g3, g3s in 2025).
RETIRED_FAMILIES = frozenset({"p2", "p3", "p3dn", "g3", "g3s"})


def ec2_refusal(action: str, params: dict[str, str]) -> tuple[str, str] | None:
    """The (code, message) EC2 answers where moto would accept, else None."""
    if action != "RunInstances":
        return None
    instance_type = params.get("InstanceType", "")
    family = instance_type.split(".", 1)[0]
    if family in RETIRED_FAMILIES:
        return (
            "Unsupported",
            "The requested configuration is currently not supported. Please check the "
            "documentation for supported configurations.",
        )
    if re.match(r"^[pg]\d", family) and instance_type not in gpu_catalog.ec2_instance_types():
        return "InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType."
    return None


def _error_document(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        "</Errors><RequestID>fault-injected</RequestID></Response>"
    ).encode()


def _real_ec2_errors(
    wsgi: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    start_response: Callable[..., Any],
) -> Iterable[bytes]:
    """Pass moto's answer on, with error documents in real EC2's shape (no namespace)."""
    captured: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    body = b"".join(wsgi(environ, capture))
    status: str = captured["status"]
    headers = list(captured["headers"])
    if int(status.split()[0]) >= 400:
        body = re.sub(rb'<Response xmlns="[^"]*">', b"<Response>", body, count=1)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


def start_moto_ec2(region: str = "us-east-1") -> MotoEc2:
    """moto's EC2 API on a free 127.0.0.1 port; call `.stop()` when done."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)
    holder: dict[str, MotoEc2] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        params = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        action = params.get("Action", "")
        moto = holder["moto"]
        if action:
            moto.actions.append((action, params))
        refused = ec2_refusal(action, params)
        answer = None if refused is None else (*refused, 400)
        for fault in moto.faults:
            if fault.action == action and fault.hits < fault.times and fault.when(params):
                fault.hits += 1
                answer = (fault.code, fault.message, fault.status)
                break
        if answer is not None:
            body = _error_document(answer[0], answer[1])
            start_response(
                f"{answer[2]} Fault",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return _real_ec2_errors(moto_app, environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="moto-ec2", daemon=True)
    thread.start()
    moto = MotoEc2(f"http://127.0.0.1:{server.server_port}", region, server, thread)
    holder["moto"] = moto
    return moto
