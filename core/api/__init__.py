"""The public API: the only part of core that plugins import.

Hook specifications, the provider contract, host-step types, errors, option checks, the
GPU table and the retry policy (`compat`, the private library internals core uses, lives
here only so every layer may import it: plugins do not). Everything here depends on nothing
else in core, so a plugin that imports it pulls in no flow, no SSH and no state.
"""
