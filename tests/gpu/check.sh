#!/usr/bin/env bash
# The GPU self-check for a machine with an NVIDIA GPU and its driver: no network needed, no
# docker needed. Runs orchestrate's host probe and gpu-check step, reads the real lspci and
# nvidia-smi, prints the facts and the driver branch and module flavour the table picks, and
# exits non-zero when anything disagrees with the recorded outputs in tests/fixtures/gpus/.
#
#   tests/gpu/check.sh            # uses .venv/bin/python when there is one, else python3
#   PYTHON=/path/to/python tests/gpu/check.sh
#
# CHECK_SKIP_SYSFS=1 skips the two parts that read /sys (the probe's GPU list, gpu-check):
# only for the self-test on a machine without a GPU, where lspci/nvidia-smi are fakes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" "$here/check.py" "$@"
