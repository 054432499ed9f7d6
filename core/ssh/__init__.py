"""Talking to a host over SSH: the session, the tunnel, local ports, the user's key and the
ssh_config we write. Imports `store` and `api`.
"""
