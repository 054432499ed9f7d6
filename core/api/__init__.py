"""The public API: the only part of core that plugins import.

Hook specifications, the provider contract, host-step types, errors, option checks and the
GPU table. Everything here depends on nothing else in core, so a plugin that imports it
pulls in no flow, no SSH and no state.
"""
