"""Kernel stack unwinding on synthetic stacks (volatility3_ktstr/unwind): x86-64 ORC with
pushed frames, the frame-pointer fallback, pt_regs from user mode, arm64 frame records with PAC
bits; damaged saved frames, ORC tables and frame records end the walk with a reason, never an
exception or a hang."""

import random
import struct

import pytest

from helpers.synth import MINI_KERNEL, SynthKernel, kernel_of
from volatility3_ktstr import unwind
from volatility3_ktstr.unwind import orc as O

X86_DECLS = """
struct orc_entry { s16 sp_offset; s16 bp_offset; u32 sp_reg : 4; u32 bp_reg : 4; u32 type : 3; u32 signal : 1; };
struct inactive_task_frame { u64 r15; u64 bx; u64 bp; u64 ret_addr; };
struct pt_regs { u64 r15; u64 bp; u64 r13; u64 r10; u64 ax; u64 dx; u64 di; u64 ip; u64 cs; u64 flags; u64 sp; u64 ss; };
struct thread_struct { u64 fsbase; unsigned long sp; };
struct task_struct { int pid; void *stack; struct thread_struct thread; };
"""
TEXT = 0xFFFFFFFF81000000
STACK = 0xFFFFC90000010000
CLASSIC = {r: i for i, r in enumerate(O.CLASSIC_REGS)}
FUNCS = {"_stext": 0, "__sched_text_start": 0x100, "__schedule": 0x100, "__sched_text_end": 0x200,
         "func_a": 0x1000, "func_b": 0x2000, "func_c": 0x3000, "entry_fn": 0x4000,
         "gap": 0x7000, "jit_fn": 0x8000, "_etext": 0x9000}


def _orc(mem, k, entries):
    """ORC tables for [(offset, sp_reg, sp_off, bp_reg, bp_off, type)], sorted by offset."""
    n = len(entries)
    ips = TEXT + 0x10000                  # ip offsets are s32: the tables live near the text
    size = k.layout.size("orc_entry")
    mem.add(ips, bytes(0x1000))
    orcs = ips + 0x800
    for i, (off, sp_reg, sp_off, bp_reg, bp_off, typ) in enumerate(entries):
        mem.write(ips + 4 * i, struct.pack("<i", TEXT + off - (ips + 4 * i)))
        mem.put("orc_entry", orcs + size * i, sp_offset=sp_off, bp_offset=bp_off,
                sp_reg=CLASSIC[sp_reg], bp_reg=CLASSIC[bp_reg], type=typ)
    return {"__start_orc_unwind_ip": ips, "__stop_orc_unwind_ip": ips + 4 * n,
            "__start_orc_unwind": orcs, "__stop_orc_unwind": orcs + size * n}


def x86_world(fp_frame=False):
    k = SynthKernel(X86_DECLS)
    mem = k.memory()
    mem.add(STACK, bytes(16384))
    C = O.TYPE_CALL
    entries = [(0x100, "sp", 8, "undefined", 0, C),
               (0x1000, "sp", 8, "undefined", 0, C), (0x1001, "sp", 16, "prev_sp", -16, C),
               (0x2000, "sp", 8, "undefined", 0, C), (0x3000, "sp", 8, "undefined", 0, C),
               (0x4000, "sp", 8, "undefined", 0, O.TYPE_END_OF_STACK),
               (0x7000, "undefined", 0, "undefined", 0, O.TYPE_UNDEFINED)]
    syms = {n: TEXT + off for n, off in FUNCS.items()}
    syms.update(_orc(mem, k, entries))
    frame = STACK + 0x3000
    sp0 = frame + k.layout.size("inactive_task_frame")
    mem.put("inactive_task_frame", frame, bp=0x1111, ret_addr=TEXT + 0x110)
    words = [TEXT + 0x1020,                  # __schedule returns into func_a
             0xB0B0, TEXT + 0x2030,          # func_a: saved bp, return into func_b
             TEXT + 0x3040]                  # func_b returns into func_c
    if fp_frame:
        words.append(TEXT + 0x8010)          # func_c returns into JIT code (no ORC: frame pointer)
    else:
        words.append(TEXT + 0x4008)          # func_c returns into the entry code (end marker)
    for i, w in enumerate(words):
        mem.write(sp0 + 8 * i, struct.pack("<Q", w))
    if fp_frame:
        # the JIT frame: func_a's saved bp points at {saved bp, return address into entry_fn}
        fp = sp0 + 8 * len(words) + 0x40
        mem.write(fp, struct.pack("<QQ", 0, TEXT + 0x4008))
        mem.write(sp0 + 8, struct.pack("<Q", fp))
    task = mem.new("task_struct", pid=7, stack=STACK, thread__sp=frame)
    return kernel_of(mem, k.layout, syms), task, mem


def texts(kernel, stack):
    return [unwind.frame_text(kernel, f) for f in unwind.visible_frames(kernel, stack)]


def test_orc_walk_matches_the_frames_pushed():
    kernel, task, _ = x86_world()
    st = unwind.task_stack(kernel, task)
    assert texts(kernel, st) == ["func_a+0x20/0x1000", "func_b+0x30/0x1000", "func_c+0x40/0x1000",
                                 "entry_fn+0x8/0x3000"]
    assert st.ok and "end of stack" in st.stop
    # the scheduler frame is there, only hidden from the /proc view
    assert unwind.frame_text(kernel, st.frames[0]).startswith(("__schedule+0x10/", "__sched_text_start+0x10/"))
    assert O.kernel_orc(kernel).tables[0].decoder.numbering == "classic"


def test_frame_pointer_fallback_for_code_without_orc():
    kernel, task, _ = x86_world(fp_frame=True)
    st = unwind.task_stack(kernel, task)
    got = texts(kernel, st)
    assert got[:4] == ["func_a+0x20/0x1000", "func_b+0x30/0x1000", "func_c+0x40/0x1000",
                       "jit_fn+0x10/0x1000"]
    assert got[4] == "entry_fn+0x8/0x3000"
    assert [f.reliable for f in st.frames][-1] is False


def test_user_mode_pt_regs_end_the_walk():
    k = SynthKernel(X86_DECLS)
    mem = k.memory()
    mem.add(STACK, bytes(16384))
    regs = STACK + 0x4000 - k.layout.size("pt_regs")
    entries = [(0x1000, "sp", 8, "undefined", 0, O.TYPE_CALL),
               (0x4000, "sp", 0, "undefined", 0, O.TYPE_REGS),
               (0x7000, "undefined", 0, "undefined", 0, O.TYPE_UNDEFINED)]
    syms = {n: TEXT + off for n, off in FUNCS.items()}
    syms.update(_orc(mem, k, entries))
    mem.put("pt_regs", regs, ip=0x401000, cs=0x33, sp=0x7ffe0000)
    sp = regs - 8
    mem.write(sp, struct.pack("<Q", TEXT + 0x4010))
    kernel = kernel_of(mem, k.layout, syms)
    st = unwind.cpu_stack(kernel, {"rip": TEXT + 0x1008, "rsp": sp, "rbp": 0},
                          extra=[unwind.StackRange(STACK, STACK + 0x4000)])
    assert [unwind.frame_text(kernel, f) for f in st.frames] == ["func_a+0x8/0x1000", "entry_fn+0x10/0x3000"]
    assert st.ok and "user-mode" in st.stop


def test_damaged_x86_stacks_never_raise_or_hang():
    rng = random.Random(22)
    for trial in range(60):
        kernel, task, mem = x86_world(fp_frame=trial % 2 == 1)
        O.kernel_orc(kernel)        # tables read before damage to memory: damage the stack
        for _ in range(rng.randint(1, 12)):
            where = STACK + 0x3000 + rng.randrange(0, 0x80)
            mem.write(where, rng.randbytes(8) if trial % 3 else struct.pack("<Q", STACK + 0x3000))
        st = unwind.task_stack(kernel, task, max_frames=64)
        assert len(st.frames) <= 64 and st.stop


def test_damaged_orc_tables_never_raise():
    rng = random.Random(7)
    for _ in range(40):
        kernel, task, mem = x86_world()
        syms = kernel.symbol_table
        start, stop = syms["__start_orc_unwind"], syms["__stop_orc_unwind"]
        for _ in range(rng.randint(1, 6)):
            mem.write(start + rng.randrange(0, stop - start - 1), rng.randbytes(2))
        st = unwind.task_stack(kernel, task)
        assert len(st.frames) <= 128 and st.stop


def test_no_orc_tables_is_a_stop_reason_not_an_error():
    kernel, task, _ = x86_world()
    for n in ("__start_orc_unwind_ip", "__stop_orc_unwind_ip"):
        kernel.symbol_table.pop(n)
    st = unwind.task_stack(kernel, task)
    assert st.stop and len(st.frames) <= 128


ARM_DECLS = """
struct cpu_context { u64 x19; u64 x20; u64 fp; u64 sp; u64 pc; };
struct thread_struct { struct cpu_context cpu_context; u64 fault_address; };
struct task_struct { int pid; void *stack; struct thread_struct thread; };
"""
ARM_TEXT = 0xFFFF800080000000
ARM_STACK = 0xFFFF800082000000


def arm_world():
    k = SynthKernel(ARM_DECLS)
    mem = k.memory()
    mem.add(ARM_STACK, bytes(16384))
    syms = {"_stext": ARM_TEXT, "__sched_text_start": ARM_TEXT + 0x100, "__schedule": ARM_TEXT + 0x100,
            "__sched_text_end": ARM_TEXT + 0x200, "func_a": ARM_TEXT + 0x1000,
            "func_b": ARM_TEXT + 0x2000, "ret_from_fork": ARM_TEXT + 0x3000, "_etext": ARM_TEXT + 0x4000}
    pac = lambda a: (a & ~(0xFF << 48)) | (0xA5 << 48)          # noqa: E731 (signed pointer)
    fp0, fp1, fp2, fp3 = (ARM_STACK + 0x3000 + 0x40 * i for i in range(4))
    mem.write(fp0, struct.pack("<QQ", fp1, pac(ARM_TEXT + 0x1020)))
    mem.write(fp1, struct.pack("<QQ", fp2, pac(ARM_TEXT + 0x2030)))
    mem.write(fp2, struct.pack("<QQ", fp3, ARM_TEXT + 0x3010))
    mem.write(fp3, struct.pack("<QQ", 0, 0))
    task = mem.new("task_struct", pid=9, stack=ARM_STACK, thread__cpu_context__fp=fp0,
                   thread__cpu_context__sp=fp0, thread__cpu_context__pc=pac(ARM_TEXT + 0x140))
    return kernel_of(mem, k.layout, syms, arch="arm64"), task, mem, (fp0, fp1, fp2)


def test_arm64_frame_records_with_pac_bits():
    kernel, task, _, _ = arm_world()
    st = unwind.task_stack(kernel, task)
    assert texts(kernel, st) == ["func_a+0x20/0x1000", "func_b+0x30/0x1000", "ret_from_fork+0x10/0x1000"]
    assert st.ok and "final frame record" in st.stop
    assert unwind.arm64.strip_pac(0x00A5_8000_8000_1020 | (1 << 55), 48) == 0xFFFF_8000_8000_1020


def test_arm64_frame_record_loop_and_damage():
    kernel, task, mem, (fp0, fp1, fp2) = arm_world()
    mem.write(fp1, struct.pack("<QQ", fp0, ARM_TEXT + 0x2030))      # points back down: a loop
    st = unwind.task_stack(kernel, task)
    assert not st.ok and "did not grow" in st.stop
    rng = random.Random(3)
    for _ in range(60):
        kernel, task, mem, fps = arm_world()
        for _ in range(rng.randint(1, 8)):
            mem.write(rng.choice(fps) + rng.choice((0, 8)), rng.randbytes(8))
        st = unwind.task_stack(kernel, task, max_frames=32)
        assert len(st.frames) <= 32 and st.stop


def test_crash_notes_give_cpu_registers():
    from volatility3_ktstr.dumpfile.notes import X86_64_PR_REG, X86_64_PRSTATUS_SIZE, PR_REG
    from volatility3_ktstr.unwind.cpus import crash_note_states

    k = SynthKernel(X86_DECLS)
    mem = k.memory()
    base = mem.alloc(8192, align=4096)
    cpu1 = base + 4096
    desc = bytearray(X86_64_PRSTATUS_SIZE)
    values = {"rip": TEXT + 0x1008, "rsp": STACK + 0x100, "rbp": 0x42}
    for i, name in enumerate(X86_64_PR_REG):
        struct.pack_into("<Q", desc, PR_REG + 8 * i, values.get(name, 0))
    note = struct.pack("<III", 5, len(desc), 1) + b"CORE\0\0\0\0" + bytes(desc)
    mem.write(cpu1, note)                          # CPU 1 crashed; CPU 0's buffer is empty
    ptr = mem.alloc(8, align=8)
    mem.write(ptr, struct.pack("<Q", base))
    kernel = kernel_of(mem, k.layout, {"crash_notes": ptr}, percpu_offsets=[0, 4096])
    states = crash_note_states(kernel)
    assert [(s.cpu, s.regs["rip"], s.regs["rbp"]) for s in states] == [(1, TEXT + 0x1008, 0x42)]
    mem.write(cpu1, struct.pack("<III", 200, 5000, 1))      # garbage header: no state, no error
    assert crash_note_states(kernel) == []


def test_cpu_without_registers_says_so():
    kernel, _, _ = x86_world()
    st = unwind.cpu_stack(kernel, {"rip": 0, "rsp": 0})
    assert st.frames == [] and "no pc" in st.stop


MOD_DECLS = MINI_KERNEL + X86_DECLS + """
enum mod_mem_type { MOD_TEXT = 0, MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT, MOD_INIT_TEXT, MOD_INIT_DATA, MOD_INIT_RODATA, MOD_MEM_NUM_TYPES };
struct module_memory { void *base; unsigned int size; };
struct elf64_sym { u32 st_name; u8 st_info; u8 st_other; u16 st_shndx; u64 st_value; u64 st_size; };
struct mod_kallsyms { struct elf64_sym *symtab; unsigned int num_symtab; char *strtab; };
struct module { int state; struct list_head list; char name[56]; struct module_memory mem[7]; struct mod_kallsyms *kallsyms; };
"""
MOD_TEXT = 0xFFFFFFFFC0100000


def test_module_frames_are_named_with_their_module():
    """A frame in a module's text (no ORC: frame pointers) is code, named from the module's
    own symbol table as /proc/PID/stack prints it: ``sym+0xoff/0xsize [module]``."""
    from volatility3_ktstr.kernel_model import BtfEnums

    k = SynthKernel(MOD_DECLS)
    mem = k.memory()
    mem.add(MOD_TEXT, bytes(0x2000))
    strtab = mem.alloc(64, align=8)
    mem.write(strtab, b"\0mod_fn\0mod_other\0")
    esize = k.layout.size("elf64_sym")
    symtab = mem.alloc(esize * 2, align=8)
    mem.put("elf64_sym", symtab, st_name=1, st_value=MOD_TEXT + 0x100)
    mem.put("elf64_sym", symtab + esize, st_name=8, st_value=MOD_TEXT + 0x400)
    ks = mem.new("mod_kallsyms", symtab=symtab, num_symtab=2, strtab=strtab)
    head = mem.list_init(mem.alloc("list_head"))
    mod = mem.new("module", name="labmod", kallsyms=ks)
    msize = k.layout.size("module_memory")
    mem.put("module_memory", mod + k.layout.offset("module", "mem"), base=MOD_TEXT, size=0x1000)
    mem.list_add_tail(head, mod + k.layout.offset("module", "list"))
    kernel = kernel_of(mem, k.layout, {"modules": head, "_stext": TEXT, "_etext": TEXT + 0x9000},
                       enums=BtfEnums(k.btf))
    names = unwind.code_names(kernel)
    assert names.is_code(MOD_TEXT + 0x180) and not names.is_code(MOD_TEXT + 0x1800)
    assert names.name(MOD_TEXT + 0x180).text == "mod_fn+0x80/0x300 [labmod]"
    assert names.name(MOD_TEXT + 0x480).text == "mod_other+0x80/0xc00 [labmod]"
    assert msize > 0


ARM_META_DECLS = """
struct frame_record { u64 fp; u64 lr; };
struct frame_record_meta { struct frame_record record; u64 type; };
struct pt_regs { u64 regs[31]; u64 sp; u64 pc; u64 pstate; u64 orig_x0; struct frame_record_meta stackframe; };
""" + ARM_DECLS


def test_arm64_exception_boundary_continues_from_pt_regs():
    """A zeroed record of type PT_REGS (an IRQ taken in the kernel) is crossed through the
    pt_regs around it: the interrupted pc, then its x29's chain; type FINAL ends the walk."""
    k = SynthKernel(ARM_META_DECLS)
    mem = k.memory()
    mem.add(ARM_STACK, bytes(16384))
    syms = {"_stext": ARM_TEXT, "func_a": ARM_TEXT + 0x1000, "func_b": ARM_TEXT + 0x2000,
            "ret_from_fork": ARM_TEXT + 0x3000, "_etext": ARM_TEXT + 0x4000}
    regs = ARM_STACK + 0x2000
    boundary = regs + k.layout.offset("pt_regs", "stackframe")
    fp0, fp2, final = ARM_STACK + 0x1000, ARM_STACK + 0x3000, ARM_STACK + 0x3800
    mem.put("frame_record", fp0, fp=boundary, lr=ARM_TEXT + 0x1020)
    mem.put("frame_record_meta", boundary, type=2)
    mem.put("pt_regs", regs, pc=ARM_TEXT + 0x2010)
    x29 = regs + k.layout.offset("pt_regs", "regs") + 8 * 29
    mem.write(x29, struct.pack("<Q", fp2))
    mem.put("frame_record", fp2, fp=final, lr=ARM_TEXT + 0x3010)
    mem.put("frame_record_meta", final, type=1)
    task = mem.new("task_struct", pid=3, stack=ARM_STACK, thread__cpu_context__fp=fp0,
                   thread__cpu_context__pc=ARM_TEXT + 0x1010)
    kernel = kernel_of(mem, k.layout, syms, arch="arm64")
    st = unwind.task_stack(kernel, task)
    assert texts(kernel, st) == ["func_a+0x10/0x1000", "func_a+0x20/0x1000", "func_b+0x10/0x1000",
                                 "ret_from_fork+0x10/0x1000"]
    assert [f.how for f in st.frames][2] == "pt_regs"
    assert st.ok and "final" in st.stop


# --- per-CPU stacks: x86-64 exception (IST) stacks and the IRQ stack's size ---------------------

CEA_DECLS = X86_DECLS + """
struct x86_hw_tss { u32 reserved1; u64 sp0; u64 sp1; u64 sp2; };
struct tss_struct { struct x86_hw_tss x86_tss; };
struct entry_stack { char stack[4096]; };
struct cea_exception_stacks { char DF_stack_guard[4096]; char DF_stack[8192]; char NMI_stack_guard[4096]; char NMI_stack[8192]; char DB_stack_guard[4096]; char DB_stack[8192]; char VC_stack_guard[4096]; char VC_stack[0]; char IST_top_guard[4096]; };
struct irq_stack { char stack[8192]; };
"""
CEA = 0xFFFFFE0000001000
NMI_FUNCS = dict(FUNCS, nmi_handler=0x5000, asm_exc_nmi=0x6000)


def nmi_world(with_cea=True):
    """CPU 0 interrupted by an NMI in func_b: its registers in nmi_handler on the NMI stack of
    its cpu_entry_area, the entry code's pt_regs at the top of that stack, then func_b's caller
    on the task stack."""
    k = SynthKernel(CEA_DECLS)
    lay = k.layout
    mem = k.memory()
    mem.add(STACK, bytes(16384))
    mem.add(CEA, bytes(lay.size("cea_exception_stacks")))
    C = O.TYPE_CALL
    entries = [(0x2000, "sp", 8, "undefined", 0, C), (0x3000, "sp", 8, "undefined", 0, C),
               (0x4000, "sp", 8, "undefined", 0, O.TYPE_END_OF_STACK),
               (0x5000, "sp", 8, "undefined", 0, C), (0x6000, "sp", 0, "undefined", 0, O.TYPE_REGS),
               (0x7000, "undefined", 0, "undefined", 0, O.TYPE_UNDEFINED)]
    syms = {n: TEXT + off for n, off in NMI_FUNCS.items()}
    syms.update(_orc(mem, k, entries))
    nmi = lay.field("cea_exception_stacks", "NMI_stack")
    regs = CEA + nmi.end - lay.size("pt_regs")
    task_sp = STACK + 0x3800
    mem.put("pt_regs", regs, ip=TEXT + 0x2010, sp=task_sp, cs=0x10)
    rsp = regs - 8
    mem.write(rsp, struct.pack("<Q", TEXT + 0x6008))                 # nmi_handler returns into the entry
    mem.write(task_sp, struct.pack("<QQ", TEXT + 0x3040, TEXT + 0x4008))
    if with_cea:
        ptr = mem.alloc(8, align=8)
        mem.write(ptr, struct.pack("<Q", CEA))
        syms["cea_exception_stacks"] = ptr
        syms["cpu_tss_rw"] = mem.new("tss_struct", x86_tss__sp0=CEA - 0x10)
    task = mem.new("task_struct", pid=11, stack=STACK)
    kernel = kernel_of(mem, lay, syms, percpu_offsets=[0])
    return kernel, task, {"rip": TEXT + 0x5010, "rsp": rsp, "rbp": 0}


def test_x86_exception_stacks_are_known_and_crossed_through_pt_regs():
    from volatility3_ktstr.unwind.cpus import cpu_ranges, cpu_stacks

    kernel, task, regs = nmi_world()
    lay = kernel.layout
    stacks = {s.what: s for s in cpu_stacks(kernel, 0)}
    assert sorted(stacks) == ["#DB exception stack", "#DF exception stack", "NMI exception stack",
                              "entry stack"]
    assert (stacks["entry stack"].lo, stacks["entry stack"].hi) == (CEA - 0x10 - 4096, CEA - 0x10)
    for member, what in (("DF_stack", "#DF"), ("NMI_stack", "NMI"), ("DB_stack", "#DB")):
        f = lay.field("cea_exception_stacks", member)
        assert (stacks[f"{what} exception stack"].lo, stacks[f"{what} exception stack"].hi) == \
            (CEA + f.offset, CEA + f.end)
    guard = CEA + lay.offset("cea_exception_stacks", "NMI_stack_guard")
    assert not any(s.holds(guard) for s in stacks.values())          # guard pages are no stack
    st = unwind.cpu_stack(kernel, regs, extra=cpu_ranges(kernel, 0, task))
    assert [unwind.frame_text(kernel, f) for f in st.frames] == [
        "nmi_handler+0x10/0x1000", "asm_exc_nmi+0x8/0x1000", "func_b+0x10/0x1000",
        "func_c+0x40/0x1000", "entry_fn+0x8/0x1000"]
    assert [f.stack for f in st.frames][:2] == ["NMI exception stack"] * 2
    assert st.frames[2].how == "pt_regs" and st.frames[2].stack == "task stack"
    assert st.ok and "end of stack" in st.stop
    # without the cpu_entry_area pointer the NMI stack is unknown: the walk stops at once
    kernel, task, regs = nmi_world(with_cea=False)
    st = unwind.cpu_stack(kernel, regs, extra=cpu_ranges(kernel, 0, task))
    assert len(st.frames) == 1 and "outside the known stacks" in st.stop


def test_irq_stack_size_comes_from_the_kernel():
    from volatility3_ktstr.unwind.cpus import irq_stack

    top = STACK + 0x10000 - 8
    for decls, extent, want in ((CEA_DECLS, 0x4000, 8192), (X86_DECLS, 0x2000, 0x2000)):
        k = SynthKernel(decls)
        mem = k.memory()
        ptr = mem.alloc(8, align=8)
        mem.write(ptr, struct.pack("<Q", top))
        backing = TEXT + 0x20000
        syms = {"hardirq_stack_ptr": ptr, "irq_stack_backing_store": backing,
                "cpu_tss_rw": backing + extent}
        kernel = kernel_of(mem, k.layout, syms, percpu_offsets=[0])
        rng = irq_stack(kernel, 0)
        assert (rng.lo, rng.hi) == (top + 8 - want, top + 8), rng
        assert rng.size_source == ("struct irq_stack" if decls is CEA_DECLS else
                                   "extent of symbol irq_stack_backing_store")


# --- arm64: overflow and SDEI stacks -----------------------------------------------------------

ARM_OVERFLOW = 0xFFFF800082400000
ARM_SDEI = 0xFFFF800082800000


@pytest.mark.parametrize("where", ["overflow stack", "SDEI normal stack", "SDEI critical stack"])
def test_arm64_overflow_and_sdei_stacks_are_known(where):
    """A CPU whose registers are on its overflow or an SDEI stack: that stack is known (the
    overflow stack's size from the symbol's BTF type, SDEI stacks THREAD_SIZE from the init
    stack's symbols), and the frame records lead on to the task stack."""
    from volatility3_ktstr.btf import Btf
    from volatility3_ktstr.unwind.cpus import cpu_ranges, cpu_stacks

    k = SynthKernel(ARM_DECLS)
    words = k.b.array(k._base("u64"), k._base("int"), 512)
    k.b.var("overflow_stack", words)
    btf = Btf.parse(k.b.build(), source="synthetic kernel")
    mem = k.memory()
    mem.add(ARM_STACK, bytes(16384))
    mem.add(ARM_OVERFLOW, bytes(0x3000))
    sdei = {"SDEI normal stack": ARM_SDEI, "SDEI critical stack": ARM_SDEI + 0x10000}
    for base in sdei.values():
        mem.add(base, bytes(0x8000))
    syms = {"_stext": ARM_TEXT, "func_a": ARM_TEXT + 0x1000, "func_b": ARM_TEXT + 0x2000,
            "ret_from_fork": ARM_TEXT + 0x3000, "_etext": ARM_TEXT + 0x4000,
            "overflow_stack": ARM_OVERFLOW, "cpu_data": ARM_OVERFLOW + 0x3000,   # extent > size
            "__start_init_stack": ARM_TEXT + 0x100000, "__end_init_stack": ARM_TEXT + 0x108000}
    for (what, base), name in zip(sdei.items(), ("sdei_stack_normal_ptr", "sdei_stack_critical_ptr")):
        ptr = mem.alloc(8, align=8)
        mem.write(ptr, struct.pack("<Q", base))
        syms[name] = ptr
    start = ARM_OVERFLOW if where == "overflow stack" else sdei[where]
    fp0 = start + 0x800
    fp1, fp2 = ARM_STACK + 0x3000, ARM_STACK + 0x3100
    mem.write(fp0, struct.pack("<QQ", fp1, ARM_TEXT + 0x2020))
    mem.write(fp1, struct.pack("<QQ", fp2, ARM_TEXT + 0x3010))
    mem.write(fp2, struct.pack("<QQ", 0, 0))
    task = mem.new("task_struct", pid=5, stack=ARM_STACK)
    kernel = kernel_of(mem, k.layout, syms, btf=btf, arch="arm64", percpu_offsets=[0])
    stacks = {s.what: s for s in cpu_stacks(kernel, 0)}
    assert (stacks["overflow stack"].lo, stacks["overflow stack"].hi) == (ARM_OVERFLOW, ARM_OVERFLOW + 4096)
    assert stacks["overflow stack"].size_source == "BTF type of overflow_stack"
    for what, base in sdei.items():
        assert (stacks[what].lo, stacks[what].hi) == (base, base + 0x8000)
    st = unwind.cpu_stack(kernel, {"pc": ARM_TEXT + 0x1010, "x29": fp0, "sp": fp0},
                          extra=cpu_ranges(kernel, 0, task))
    assert [unwind.frame_text(kernel, f) for f in st.frames] == [
        "func_a+0x10/0x1000", "func_b+0x20/0x1000", "ret_from_fork+0x10/0x1000"]
    assert st.frames[1].stack == where and st.frames[2].stack == "task stack"
    assert st.ok
    # the task stack alone does not hold the first record
    st = unwind.cpu_stack(kernel, {"pc": ARM_TEXT + 0x1010, "x29": fp0, "sp": fp0},
                          extra=cpu_ranges(kernel, 0, task)[:1])
    assert not st.ok and "outside the known stacks" in st.stop


# --- BPF trampolines and dispatchers: what they serve --------------------------------------------

TRAMP_DECLS = MINI_KERNEL + """
enum bpf_tramp_prog_type { BPF_TRAMP_FENTRY = 0, BPF_TRAMP_FEXIT, BPF_TRAMP_MODIFY_RETURN, BPF_TRAMP_MAX, BPF_TRAMP_REPLACE };
struct bpf_ksym { u64 start; u64 end; char name[64]; struct list_head lnode; bool prog; };
struct bpf_trampoline { struct hlist_node hlist_key; u64 key; void *ip; void *extension_prog; int progs_cnt[3]; void *cur_image; };
struct bpf_tramp_image { void *image; int size; struct bpf_ksym ksym; struct bpf_trampoline *tr; };
struct bpf_dispatcher { u64 mutex; void *func; int num_progs; void *image; struct bpf_ksym ksym; };
"""
IMAGES = 0xFFFFFFFFA0000000


def tramp_world(back_pointer=True):
    """A trampoline image (ksym on bpf_kallsyms) of a bpf_trampoline tracing func_b, found
    through the image's ``tr`` or the key table, and the XDP dispatcher standing in for func_c."""
    from volatility3_ktstr.kernel_model import BtfEnums

    decls = TRAMP_DECLS if back_pointer else TRAMP_DECLS.replace(" struct bpf_trampoline *tr;", "")
    k = SynthKernel(decls)
    lay = k.layout
    mem = k.memory()
    mem.add(IMAGES, bytes(0x3000))
    key = (7 << 32) | 1234
    head = mem.list_init(mem.alloc("list_head"))
    table = mem.alloc(lay.size("hlist_head") * 4, align=8)
    tr = mem.new("bpf_trampoline", key=key, ip=TEXT + 0x2004, progs_cnt=b"")
    cnt = lay.field("bpf_trampoline", "progs_cnt")
    mem.write(tr + cnt.offset, struct.pack("<3i", 1, 2, 1))
    mem.hlist_add_head(table + lay.size("hlist_head") * 2, tr + lay.offset("bpf_trampoline", "hlist_key"))
    im = mem.new("bpf_tramp_image", image=IMAGES, **({"tr": tr} if back_pointer else {}))
    ksym = im + lay.offset("bpf_tramp_image", "ksym")
    mem.put("bpf_ksym", ksym, start=IMAGES, end=IMAGES + 0x1000, name=f"bpf_trampoline_{key}")
    mem.list_add_tail(head, ksym + lay.offset("bpf_ksym", "lnode"))
    d = mem.new("bpf_dispatcher", func=TEXT + 0x3000, num_progs=2, image=IMAGES + 0x2000)
    dksym = d + lay.offset("bpf_dispatcher", "ksym")
    mem.put("bpf_ksym", dksym, start=IMAGES + 0x2000, end=IMAGES + 0x2800, name="bpf_dispatcher_xdp")
    mem.list_add_tail(head, dksym + lay.offset("bpf_ksym", "lnode"))
    syms = {n: TEXT + off for n, off in FUNCS.items()}
    syms.update(bpf_kallsyms=head, bpf_dispatcher_xdp=d)
    if not back_pointer:
        syms.update(trampoline_key_table=table, trampoline_ip_table=table + lay.size("hlist_head") * 4)
    kernel = kernel_of(mem, lay, syms, enums=BtfEnums(k.btf))
    return kernel, mem, lay, syms, tr, key, k


@pytest.mark.parametrize("back_pointer", [True, False])
def test_trampolines_and_dispatchers_name_what_they_serve(back_pointer):
    """A trampoline frame names the function it traces (``struct bpf_trampoline``'s ip, found
    from the image's ``tr`` or by key in the hash table) and its fentry/fexit/fmod_ret counts;
    a dispatcher frame the function it stands in for and its program count."""
    from volatility3_ktstr.kernel_model import BtfEnums

    kernel, mem, lay, syms, tr, key, k = tramp_world(back_pointer)
    names = unwind.code_names(kernel)
    t = names.name(IMAGES + 0x40)
    assert (t.kind, t.text) == ("bpf_trampoline", f"bpf_trampoline_{key}+0x40/0x1000")
    assert t.serves == "trampoline of func_b: fentry 1, fexit 2, fmod_ret 1"
    assert unwind.bpf_frame_text(kernel, IMAGES + 0x40) == \
        f"bpf_trampoline_{key}+0x40 (trampoline of func_b: fentry 1, fexit 2, fmod_ret 1)"
    dn = names.name(IMAGES + 0x2010)
    assert (dn.kind, dn.serves) == ("bpf_dispatcher", "dispatcher of func_c, 2 programs")
    # a trampoline whose key is in no table (its struct gone): named by kallsyms alone
    mem.write(tr + lay.offset("bpf_trampoline", "key"), struct.pack("<Q", key + 1))
    kernel = kernel_of(mem, lay, syms, enums=BtfEnums(k.btf))
    t = unwind.code_names(kernel).name(IMAGES + 0x40)
    assert t.kind == "bpf_trampoline" and t.serves == ""


# --- kallsyms sizes in every encoding of the kernel's table ---------------------------------------

KALLSYMS = TEXT + 0x40000


@pytest.mark.parametrize("encoding", ["addresses", "relative_base", "absolute_percpu", "pc_relative"])
def test_kallsyms_sizes_in_every_table_encoding(encoding):
    """Sizes come from the kernel's own table (``__pfx_func_b`` ends func_a 16 bytes early),
    whether it stores absolute addresses (``kallsyms_addresses``: no
    CONFIG_KALLSYMS_BASE_RELATIVE), u32 offsets from ``kallsyms_relative_base``, absolute
    per-CPU entries with negative offsets (CONFIG_KALLSYMS_ABSOLUTE_PERCPU) or offsets from
    each entry's own position."""
    k = SynthKernel(X86_DECLS)
    mem = k.memory()
    mem.add(KALLSYMS, bytes(0x1000))
    addrs = [TEXT, TEXT + 0x1000, TEXT + 0x1FF0, TEXT + 0x2000, TEXT + 0x3000, TEXT + 0x4000]
    if encoding == "absolute_percpu":
        addrs = [0x1000, 0x2000] + addrs          # per-CPU symbols: absolute, below the text
    syms = {n: TEXT + off for n, off in FUNCS.items()}
    num = KALLSYMS + 0x800
    mem.write(num, struct.pack("<I", len(addrs)))
    syms["kallsyms_num_syms"] = num
    base = KALLSYMS + 0x900
    mem.write(base, struct.pack("<Q", TEXT))

    def encode(addrs):
        if encoding == "addresses":
            mem.write(KALLSYMS, struct.pack(f"<{len(addrs)}Q", *addrs))
        elif encoding == "pc_relative":
            mem.write(KALLSYMS, struct.pack(f"<{len(addrs)}i", *(a - (KALLSYMS + 4 * i) for i, a in enumerate(addrs))))
        elif encoding == "relative_base":
            mem.write(KALLSYMS, struct.pack(f"<{len(addrs)}I", *(a - TEXT for a in addrs)))
        else:
            mem.write(KALLSYMS, struct.pack(f"<{len(addrs)}i", *(a if a < TEXT else -(a - TEXT) - 1 for a in addrs)))

    encode(addrs)
    if encoding == "addresses":
        syms["kallsyms_addresses"] = KALLSYMS
    elif encoding == "pc_relative":
        syms["kallsyms_offsets"] = KALLSYMS
    else:
        syms.update(kallsyms_offsets=KALLSYMS, kallsyms_relative_base=base)
    kernel = kernel_of(mem, k.layout, syms)
    names = unwind.code_names(kernel)
    assert names.name(TEXT + 0x1020).text == "func_a+0x20/0xff0"
    assert names.name(TEXT + 0x2030).text == "func_b+0x30/0x1000"
    # a table that does not decode to addresses holding _stext: the symbol table's sizes
    encode([a + 8 if a == TEXT else a for a in addrs])
    kernel = kernel_of(mem, k.layout, syms)
    assert unwind.code_names(kernel).name(TEXT + 0x1020).text == "func_a+0x20/0x1000"


def test_damaged_trampolines_never_raise():
    rng = random.Random(5)
    for trial in range(24):
        kernel, mem, lay, syms, tr, key, k = tramp_world(back_pointer=trial % 2 == 0)
        unwind.code_names(kernel).bpf_symbols()       # the ksym list read whole: damage what is behind it
        for _ in range(rng.randint(1, 6)):
            where = rng.choice([tr, tr + lay.size("bpf_trampoline") // 2, syms["bpf_dispatcher_xdp"]])
            mem.write(where + rng.randrange(0, 16) * 8, rng.randbytes(8))
        for ip in (IMAGES + 0x40, IMAGES + 0x2010):
            text = unwind.bpf_frame_text(kernel, ip)
            assert text is not None and text.startswith("bpf_")
