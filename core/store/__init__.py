"""What orchestrate keeps on disk: the state database, profiles (and their snapshot in a
row), the folders it uses, and TOML reading. Imports only `api`.
"""
