"""Reliability and security tests on the test bed (issue 10): crashes, drops, faults, input."""
