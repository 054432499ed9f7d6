"""Run a traced `orchestrate launch` whose lone instance is set up as a one-node cluster.

    python -m bench.cluster_of_one OUT.json launch NAME ...

The cluster benchmark's fair baseline: one instance doing what each node of a cluster does
(the cluster's rule and secret, host setup with Ray's head in its container, the notebook
on the host's network, the tunnels), so the comparison with N nodes measures what the
other nodes add, not Ray itself. The product makes no one-node cluster (`nodes = 1` is a
lone instance without Ray), so this wraps, in this process only, the lone launch's flow
(`core.flows.launch.bring_up`) with the cluster's (`bring_up_cluster` of one plan marked
as its cluster's head, as `node_plans` marks every node) and then runs `bench.trace`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any


def install() -> None:
    from orchestrate.core.api import provider as p
    from orchestrate.core.flows import launch
    from orchestrate.core.flows.cluster import bring_up_cluster

    def as_cluster(runtime: Any, plan: Any, **options: Any) -> Any:
        labels = {**plan.spec.labels, p.CLUSTER_LABEL: plan.name}
        plan.spec = dataclasses.replace(plan.spec, cluster=plan.name, labels=labels)
        return bring_up_cluster(runtime, [plan], **options)

    launch.bring_up = as_cluster  # the launch command imports it at call time


if __name__ == "__main__":
    from bench import trace

    install()
    sys.exit(trace.main(sys.argv[1:]))
