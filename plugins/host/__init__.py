"""The shared host-setup steps, one plugin module each (driver, docker, toolkit, verify,
image, notebook, autostop).

Every module implements ``orchestrate_host_steps(context)`` and returns the steps it
contributes; the GPU ones return none for a CPU host (``context.gpu is None``). Order, as
their ``after`` fields make it: gpu-check -> nvidia-driver -> docker -> container-toolkit ->
verify, and docker -> image-pull. Core's plugin list (`BUILTIN_PLUGINS`) registers them.
"""
