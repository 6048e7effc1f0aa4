"""BPF objects in kernel memory: IDR walks, maps, programs, BTF objects (no Volatility import)."""
