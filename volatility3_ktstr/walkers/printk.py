"""The kernel log from memory: the printk ring buffer (kernel/printk/printk_ringbuffer.[ch], 5.10+).

``prb`` points at a ``struct printk_ringbuffer {desc_ring, text_data_ring, fail}``:

- ``desc_ring`` (``struct prb_desc_ring``): ``1 << count_bits`` descriptors (``descs[]``, each
  ``{state_var, text_blk_lpos {begin, next}}``) and as many ``struct printk_info`` (``infos[]``:
  seq, ts_nsec, text_len, level, caller_id); ``tail_id`` .. ``head_id`` are the live ids. A
  descriptor's ``state_var`` holds its id in the low bits and its state in the top two
  (reserved 0, committed 1, finalized 2, reusable 3); a slot whose id differs has been reused.
- ``text_data_ring`` (``struct prb_data_ring``): ``1 << size_bits`` bytes at ``data``; a record's
  text block starts at ``begin`` (logical position, index ``begin & (size - 1)``) with the
  descriptor id (an unsigned long) followed by the text. A block that would wrap is stored at the
  start of the ring instead (``begin`` then sits one wrap behind ``next``). Odd positions mark
  data-less records.

Descriptors and infos are read in bulk (chunks of the live range ``tail_id`` .. ``head_id``), each
record's text with one read; everything is bounded by the ring's own sizes; records that cannot be decoded are counted in ``damage``, never raised.
"""

from dataclasses import dataclass
from typing import List, Optional

from ..core import Layout, LayoutError, ReadError, Reader, Record
from ..kds import DamageLog

MAX_DESC_BITS = 20          # 1M descriptors (the kernel's default is 2^(log_buf_shift - 5))
MAX_TEXT_BITS = 31          # the kernel's log_buf_len limit is 2 GiB; text is read per record
CHUNK = 512                 # descriptors (and infos) per bulk read
STATE_COMMITTED, STATE_FINALIZED = 1, 2


@dataclass
class LogRecord:
    seq: int
    ts_nsec: int
    level: int
    caller_id: int
    text: str

    def lines(self) -> List[str]:
        """The record as the console prints it: ``[seconds.micros] line`` per line of text."""
        stamp = f"[{self.ts_nsec // 1_000_000_000:5d}.{self.ts_nsec % 1_000_000_000 // 1000:06d}]"
        return [f"{stamp} {line}" for line in self.text.split("\n")]


def read_log(reader: Reader, layout: Layout, prb: int, damage: Optional[DamageLog] = None,
             word: int = 8) -> List[LogRecord]:
    """Records of the ring buffer ``struct printk_ringbuffer`` at ``prb`` in sequence order.

    ``word`` is sizeof(unsigned long) (the data block's id). Raises ReadError/LayoutError only
    when the ring's header itself cannot be read (there is no log to speak of then)."""
    damage = damage if damage is not None else DamageLog()
    dr_off = layout.offset("printk_ringbuffer", "desc_ring")
    tr_off = layout.offset("printk_ringbuffer", "text_data_ring")
    dr = Record(reader, layout, "prb_desc_ring", prb + dr_off)
    tr = Record(reader, layout, "prb_data_ring", prb + tr_off)
    count_bits = dr.int("count_bits")
    size_bits = tr.int("size_bits")
    if not 0 < count_bits <= MAX_DESC_BITS or not 0 < size_bits <= MAX_TEXT_BITS:
        damage.add("printk ring", prb, f"implausible sizes (count_bits {count_bits}, "
                                       f"size_bits {size_bits})")
        return []
    count, size = 1 << count_bits, 1 << size_bits
    f_state = layout.field("prb_desc", "state_var")
    sv_bits = 8 * f_state.size
    flags_shift = sv_bits - 2
    id_mask = (1 << flags_shift) - 1
    head, tail = dr.int("head_id") & id_mask, dr.int("tail_id") & id_mask   # ids wrap at id_mask
    desc_size, info_size = layout.size("prb_desc"), layout.size("printk_info")
    descs_at, infos_at, text_at = dr.int("descs"), dr.int("infos"), tr.int("data")
    f_begin = layout.field("prb_desc", "text_blk_lpos.begin")
    f_next = layout.field("prb_desc", "text_blk_lpos.next")
    fi = {n: layout.field("printk_info", n) for n in ("seq", "ts_nsec", "text_len", "level")}
    f_caller = layout.field("printk_info", "caller_id")
    live = ((head - tail) & id_mask) + 1
    if live > count:
        damage.add("printk descriptor ring", prb, f"head id not reached after {count} descriptors")
        live = count
    out = []
    for first in range(0, live, CHUNK):
        n = min(CHUNK, live - first)
        index = (tail + first) & (count - 1)
        descs = _slots(reader, descs_at, desc_size, index, n, count)
        infos = _slots(reader, infos_at, info_size, index, n, count)
        if descs is None or infos is None:
            damage.add("printk descriptors", descs_at + index * desc_size,
                       f"{n} descriptors unreadable")
            continue
        for j in range(n):
            ident = (tail + first + j) & id_mask
            d = descs[j * desc_size:(j + 1) * desc_size]
            sv = f_state.decode(d) & ((1 << sv_bits) - 1)      # atomic_long_t may decode signed
            state = (sv >> flags_shift) & 3
            if sv & id_mask != ident or state not in (STATE_COMMITTED, STATE_FINALIZED):
                continue       # reused for a newer record, being written, or freed
            info = infos[j * info_size:(j + 1) * info_size]
            rec = _record(reader, text_at, size, size_bits, word, ident, f_begin.decode(d),
                          f_next.decode(d), {k: f.decode(info) for k, f in fi.items()},
                          f_caller.decode(info), damage)
            if rec is not None:
                out.append(rec)
    out.sort(key=lambda r: r.seq)
    return out


def _slots(reader, base, slot_size, index, n, count):
    """Bytes of ``n`` consecutive ring slots from ``index`` (wrapping at ``count``), or None."""
    first = min(n, count - index)
    a = reader.try_read(base + index * slot_size, first * slot_size)
    if a is None or first == n:
        return a
    b = reader.try_read(base, (n - first) * slot_size)
    return None if b is None else a + b


def _record(reader, text_at, size, size_bits, word, ident, begin, nxt, info, caller, damage):
    if begin & 1 and nxt & 1:      # data-less: a failed reservation, or an empty line
        body = b""
    else:
        same_wrap = begin >> size_bits == nxt >> size_bits
        if same_wrap and begin < nxt:
            start, length = begin & (size - 1), nxt - begin
        elif (begin + size) >> size_bits == nxt >> size_bits:
            start, length = 0, nxt & (size - 1)       # wrapped: stored at the ring's start
        else:
            damage.add("printk record", 0, f"seq {info['seq']}: bad text positions "
                                           f"{begin:#x}..{nxt:#x}")
            return None
        if length < word or start + length > size:
            damage.add("printk record", 0, f"seq {info['seq']}: text block of {length} bytes")
            return None
        raw = reader.try_read(text_at + start, min(length, word + info["text_len"]))
        if raw is None:
            damage.add("printk record", text_at + start, f"seq {info['seq']}: text unreadable")
            return None
        if int.from_bytes(raw[:word], "little") != ident:
            damage.add("printk record", 0, f"seq {info['seq']}: text block overwritten")
            return None
        body = raw[word:]
    return LogRecord(info["seq"], info["ts_nsec"], info["level"], caller,
                     body.decode("utf-8", "replace"))


def kernel_log(reader: Reader, layout: Layout, prb_symbol: int,
               damage: Optional[DamageLog] = None) -> List[LogRecord]:
    """Records of the kernel log whose ring buffer pointer is the symbol ``prb`` at ``prb_symbol``
    (records, or raises ReadError/LayoutError naming what is missing)."""
    if not layout.has("printk_ringbuffer"):
        raise LayoutError("type 'struct printk_ringbuffer' is not in the kernel symbol table")
    return read_log(reader, layout, reader.ptr(prb_symbol), damage)
