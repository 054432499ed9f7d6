"""The shared host-setup steps, one plugin module each (seed workflow steps 2 and 3).

Every module implements ``orchestrate_host_steps(context)`` and returns the steps it
contributes; the GPU ones return none for a CPU host (``context.gpu is None``). Order, as
their ``after`` fields make it: gpu-check -> nvidia-driver -> docker -> container-toolkit ->
verify, and docker -> image-pull. Register them all with `MODULES`.
"""

#: The built-in plugin modules of this package, for the plugin manager's built-in list.
MODULES: tuple[str, ...] = (
    "orchestrate.plugins.host.gpu_check",
    "orchestrate.plugins.host.nvidia_driver",
    "orchestrate.plugins.host.docker",
    "orchestrate.plugins.host.container_toolkit",
    "orchestrate.plugins.host.verify",
    "orchestrate.plugins.host.image",
)
