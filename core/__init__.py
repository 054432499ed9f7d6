"""orchestrate's core: profiles, state, plugin manager, SSH session, host steps, tunnel.

Nothing here imports libcloud or paramiko at module level: `orchestrate --help` must stay fast,
so those are imported inside the functions that talk to a cloud or a host.
"""

__version__ = "0.1.0"
