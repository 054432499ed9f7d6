"""The command line: Typer commands that parse, call a flow and print.
"""
