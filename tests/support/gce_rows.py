"""State rows made by launch's own cloud step against the fake GCE API (no host set-up).

For tests of what `status` and relaunches do with rows: `cpu_profile` writes a CPU
profile `cpu` pointing at the fake, `launched` creates instances through
`launch.record_intent` and `instances.ensure_running`, as `launch` does before SSH.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bed.gce_fake import GceFake

PROFILE = """
[profiles.cpu]
provider = "gcp"
autostop = "60m"

[profiles.cpu.gcp]
project = "{project}"
credentials = "{credentials}"
api_endpoint = "{endpoint}"
accelerator = "none"
zones = ["us-east1-d"]
"""


@pytest.fixture
def cpu_profile(
    gce_api: GceFake, gce_credentials: Path, write_profiles: Any, orch_home: Path
) -> Iterator[GceFake]:
    """A CPU profile `cpu` against the fake; yields the fake."""
    write_profiles(
        PROFILE.format(
            project=gce_api.project, credentials=gce_credentials, endpoint=gce_api.endpoint
        )
    )
    yield gce_api


def launched(runtime: Any, names: tuple[str, ...], profile: str = "cpu") -> dict[str, Any]:
    """Instances made by launch's own cloud step with `profile`, by name (their provider
    records)."""
    from orchestrate.core.cloud.instances import ensure_running
    from orchestrate.core.flows.launch import make_plan, record_intent

    records = {}
    for name in names:
        plan = make_plan(runtime, name, runtime.profile(profile), {}, token=None)
        record_intent(runtime.state(), plan)
        records[name] = ensure_running(runtime.state(), plan.provider, plan.spec, lambda m: None)
    return records
