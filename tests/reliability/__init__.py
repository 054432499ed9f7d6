"""Reliability and security tests on the test bed: crashes, drops, faults, input."""
