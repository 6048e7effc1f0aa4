"""Per-CPU addresses (no Volatility import)."""

MASK64 = (1 << 64) - 1


def percpu_sum(base: int, offset: int) -> int:
    """Address of CPU data: ``base`` (a per-CPU symbol's runtime address or a ``__percpu``
    pointer) plus that CPU's ``__per_cpu_offset``, wrapped to 64 bits as the kernel's sum is.

    The one place a per-CPU address is made; ``kernel_model.Kernel.percpu_address`` resolves
    the base (a zero-based per-CPU symbol is not slid) and calls it, walkers that take offsets
    call it directly."""
    return (base + offset) & MASK64
