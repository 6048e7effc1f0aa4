"""Shared test helpers: synthetic kernels (BTF + memory) for walker tests without a dump."""
