"""The kernel type (kernel_model.Kernel): symbols, the one nearest-symbol index, enums, the
memo, BTF objects, and the names KernelContext had (other code depends on them)."""

import pytest

from helpers.btf import BtfBuilder
from helpers.synth import MINI_KERNEL, SynthKernel, kernel_of
from volatility3_ktstr.bpf.facts import BpfKernel
from volatility3_ktstr.core.symbols import SymbolIndex
from volatility3_ktstr.errors import KtstrError
from volatility3_ktstr.kernel_model import BtfEnums, Kernel

COMPAT = ("reader", "layout", "symbol", "require_symbol", "require_type", "first_symbol", "enum",
          "enum_constants", "enumerator", "nr_cpu_ids", "per_cpu_offsets", "maps", "progs", "links",
          "btf_objects", "btf_by_id", "btf_by_name", "arenas", "prog_arenas", "kernel_btf", "btf_at",
          "btf_id_at", "bpf_kernel", "canonical", "sorted_symbols", "boot_epoch_ns",
          "map_type_names", "prog_type_names")


def test_kernelcontext_names_are_on_the_kernel_type():
    from volatility3_ktstr.kernel import KernelContext

    assert issubclass(KernelContext, Kernel)
    k = Kernel(None, None)
    assert [n for n in COMPAT if not hasattr(k, n)] == []
    assert hasattr(KernelContext, "from_plugin") and hasattr(KernelContext, "sdt_programs")


def test_symbol_index_at_near_size():
    idx = SymbolIndex(lambda: [(0x1000, "__pfx_f"), (0x1000, "f"), (0x1010, "g"), (0x1010, "g_alias"),
                               (0x3000, "h")])
    assert idx.at(0x1000) == "f" and idx.at(0x1001) is None
    assert idx.near(0x1004) == "f+0x4" and idx.near(0x1010) == "g_alias"
    assert idx.near(0x0FFF) == "" and idx.near(0x3000 + (1 << 20) + 1) == ""
    assert idx.next_after(0x1000) == 0x1010 and idx.next_after(0x3000) is None


def test_symbols_enums_and_memo():
    sk = SynthKernel(MINI_KERNEL + "enum colour { RED = 1, GREEN = 2 };")
    mem = sk.memory()
    k = kernel_of(mem, sk.layout, {"f": 0xFFFFFFFF81000000, "g": 0xFFFFFFFF81000100, "arr": 0xFFFFFFFF81000200,
                                   "next": 0xFFFFFFFF81000240}, btf=sk.btf, percpu_offsets=[0, 0x4000])
    assert k.symbol("f") == 0xFFFFFFFF81000000 and k.symbol("nope") is None
    assert k.first_symbol("nope", "g") == 0xFFFFFFFF81000100
    assert k.symbols("f", "nope") == {0xFFFFFFFF81000000: "f"}
    assert k.symbol_at(0xFFFFFFFF81000100) == "g" and k.symbol_near(0xFFFFFFFF81000108) == "g+0x8"
    assert k.symbol_size("arr") == 0x40
    with pytest.raises(KtstrError, match="'nope'"):
        k.require_symbol("nope")
    with pytest.raises(KtstrError, match="struct nope"):
        k.require_type("nope")
    assert k.enum("colour") == [("RED", 1), ("GREEN", 2)] and k.enum("nope") is None
    assert k.enum_constants("colour") == {"RED": 1, "GREEN": 2} and k.enumerator("GREEN") == 2
    assert k.names("colour", "") == {1: "red", 2: "green"}
    assert k.per_cpu_offsets() == [0, 0x4000] and k.nr_cpu_ids() == 2
    calls = []
    assert k.memo(("mine", 1), lambda: calls.append(1) or 7) == 7
    assert k.memo(("mine", 1), lambda: calls.append(1) or 8) == 7 and calls == [1]


def test_enum_source_comes_before_the_kernel_btf():
    b = BtfBuilder()
    b.enum("colour", 4, [("BLUE", 4)])
    k = Kernel(None, None, enums=BtfEnums(b.btf()))
    assert k.enum("colour") == [("BLUE", 4)] and k.enumerator("BLUE") == 4
    with pytest.raises(KtstrError, match="btf_vmlinux"):
        k.kernel_btf()


def test_btf_objects_cached_and_errors_cached():
    k = Kernel(None, None, btf_cache={0x1000: KtstrError("BTF object at 0x1000: bad magic")})
    for _ in range(2):
        with pytest.raises(KtstrError, match="bad magic"):
            k.btf_at(0x1000)


def test_bpf_kernel_is_a_view_of_the_kernel():
    sk = SynthKernel(MINI_KERNEL)
    k = kernel_of(sk.memory(), sk.layout, {"f": 0xFFFFFFFF81000000})
    bk = k.bpf_kernel()
    assert isinstance(bk, BpfKernel) and bk is k.bpf_kernel()
    assert bk.progs == [] and bk.maps == []          # no registries in this kernel: empty
    assert bk.symbol_near(0xFFFFFFFF81000010) == "f+0x10" and bk.kernel is k
    assert bk.kernel_btf_id == 1
