"""Bring N instances to running through orchestrate's own launch path, N at a time.

    python -m bench.converge --profile bench --concurrency 16 NAME [NAME ...]

For each name, exactly what `launch` does before it first connects over SSH: validate the
profile and build the plan (`make_plan`), write the intent row, then `ensure_running`
(find, preflight, zone failover, create, wait for RUNNING, store the record). Each
concurrent launch gets its own `Runtime` (own provider objects, own state connection), as
separate `orchestrate launch` processes would: libcloud connections are not thread-safe.

Run with ORCHESTRATE_HOME and the working directory of the benchmark's private home. Prints
one JSON line: seconds for the whole batch, each launch's seconds, and failures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def converge(names: list[str], profile_name: str, concurrency: int) -> dict[str, Any]:
    from orchestrate.core.cloud.instances import ensure_running
    from orchestrate.core.flows.launch import make_plan, record_intent
    from orchestrate.core.ssh.keys import ensure_ssh_key
    from orchestrate.core.wiring.registry import build_manager
    from orchestrate.core.wiring.runtime import Runtime

    pm = build_manager()
    ensure_ssh_key()  # once, before the threads: every launch of a user shares one key
    pm.load_builtins()

    def one(name: str) -> float:
        runtime = Runtime(pm=pm)
        try:
            started = time.perf_counter()
            profile = runtime.profile(profile_name)
            plan = make_plan(runtime, name, profile, {}, token=None)
            state = runtime.state()
            record_intent(state, plan)
            record = ensure_running(state, plan.provider, plan.spec, lambda message: None)
            if not record.address:
                raise RuntimeError(f"{name} has no address")
            return time.perf_counter() - started
        finally:
            runtime.close()

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {name: pool.submit(one, name) for name in names}
        for name, future in futures.items():
            try:
                seconds[name] = future.result()
            except Exception as exc:  # reported, not raised: the batch figure needs them all
                errors[name] = f"{type(exc).__name__}: {exc}"
    return {
        "seconds": time.perf_counter() - started,
        "each": seconds,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.converge")
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    result = converge(args.names, args.profile, args.concurrency)
    print(json.dumps(result), flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
