"""The shared host-setup steps, one plugin module each (driver, docker, toolkit, verify,
image, notebook, autostop).

Every module implements ``orchestrate_host_steps(context)`` and returns the steps it
contributes; the GPU ones return none for a CPU host (``context.gpu is None``). The graph
their ``after`` fields make: gpu-check -> docker -> container-toolkit -> nvidia-driver ->
verify -> notebook, and container-toolkit -> image -> verify; the stage runs the image pull
and the driver install at the same time. Core's plugin list (`BUILTIN_PLUGINS`) registers them.
"""
