"""Putting the parts together for one process: the plugin manager (built-ins from a list,
third parties from entry points) and the per-command runtime.
"""
