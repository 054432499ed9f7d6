"""What a command does, start to end: launch, status, teardown, the detached tunnel,
crash points and process helpers. Each flow may use every layer below it.
"""
