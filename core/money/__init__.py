"""Prices, billing and cost so far: estimates from a dated data file, never a reason to
block a launch or hide an instance.
"""
