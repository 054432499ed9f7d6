"""Setting a host up over a session: the probe, the step runner, the startup-script
bootstrap, Jupyter readiness and docker commands on the host.
"""
