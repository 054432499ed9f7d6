"""Instances on a provider: converging a row to a running instance, and zone failover.
"""
