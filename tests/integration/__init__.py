"""Integration tests: the containers of the ci stack, on this machine's Docker engine."""
