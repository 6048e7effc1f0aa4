"""A pure-Python LZO1X decompressor (what makedumpfile ``-l`` writes), bounded in output.

Used when the ``python-lzo`` binding is not installed (it needs liblzo2 to build). Written from
the LZO1X stream description in the Linux kernel (Documentation/staging/lzo.rst); about
1-2 ms per 4 KiB page, enough for the pages a plugin reads.

The stream is a sequence of instructions; each copies a run of literals or a match from the
output already produced, and its low two bits ("state") say how many literals follow it. The
stream ends with the match instruction 0x11 0x00 0x00 (distance 16384).
"""


class LzoError(ValueError):
    """The data is not a valid LZO1X stream for the given output size."""


def _length(src, ip, base):
    """``base`` + the run of zero bytes * 255 + the following byte; (length, new ip)."""
    zeros = 0
    n = len(src)
    while ip < n and src[ip] == 0:
        zeros += 1
        ip += 1
        if zeros > (1 << 24):
            raise LzoError("length run too long")
    if ip >= n:
        raise LzoError("input ends inside a length")
    return base + zeros * 255 + src[ip], ip + 1


def decompress(src, out_max: int) -> bytes:
    """Decompress one LZO1X stream into at most ``out_max`` bytes (LzoError otherwise)."""
    src = bytes(src)
    n = len(src)
    out = bytearray()
    ip = 0
    if n == 0:
        raise LzoError("empty input")

    def literals(count, ip):
        if ip + count > n:
            raise LzoError("input ends inside a literal run")
        if len(out) + count > out_max:
            raise LzoError(f"output larger than {out_max} bytes")
        out.extend(src[ip:ip + count])
        return ip + count

    def match(dist, length):
        start = len(out) - dist
        if dist <= 0 or start < 0:
            raise LzoError("match reaches before the start of the output")
        if len(out) + length > out_max:
            raise LzoError(f"output larger than {out_max} bytes")
        if dist >= length:
            out.extend(out[start:start + length])
        else:                              # overlapping copy: the last ``dist`` bytes repeat
            pattern = bytes(out[start:])
            out.extend((pattern * (length // dist + 1))[:length])

    state = 0
    first = src[0]
    if first > 17:
        count = first - 17
        ip = literals(count, 1)
        state = 4 if count >= 4 else count
    for _ in range(out_max + n + 2):       # every instruction consumes input or makes output
        if ip >= n:
            raise LzoError("input ends without the end-of-stream marker")
        op = src[ip]
        ip += 1
        if op < 16:
            if state == 0:                 # long literal run
                if op == 0:
                    count, ip = _length(src, ip, 15)
                    count += 3
                else:
                    count = op + 3
                ip = literals(count, ip)
                state = 4
                continue
            if ip >= n:
                raise LzoError("input ends inside a match")
            h = src[ip]
            ip += 1
            if state == 4:                 # 3 bytes from 2..3 KiB back
                match((h << 2) + ((op >> 2) & 3) + 2049, 3)
            else:                          # 2 bytes from at most 1 KiB back
                match((h << 2) + ((op >> 2) & 3) + 1, 2)
            state = op & 3
        elif op < 32:                      # 16..48 KiB back
            length = op & 7
            if length == 0:
                length, ip = _length(src, ip, 7)
            length += 2
            if ip + 2 > n:
                raise LzoError("input ends inside a match")
            le16 = src[ip] | (src[ip + 1] << 8)
            ip += 2
            dist = 16384 + ((op & 8) << 11) + (le16 >> 2)
            if dist == 16384:
                if ip != n:
                    raise LzoError(f"{n - ip} bytes of input after the end-of-stream marker")
                return bytes(out)
            match(dist, length)
            state = le16 & 3
        elif op < 64:                      # up to 16 KiB back
            length = op & 31
            if length == 0:
                length, ip = _length(src, ip, 31)
            length += 2
            if ip + 2 > n:
                raise LzoError("input ends inside a match")
            le16 = src[ip] | (src[ip + 1] << 8)
            ip += 2
            match((le16 >> 2) + 1, length)
            state = le16 & 3
        else:                              # 3..8 bytes from up to 2 KiB back
            if ip >= n:
                raise LzoError("input ends inside a match")
            h = src[ip]
            ip += 1
            length = 3 + ((op >> 5) & 1) if op < 128 else 5 + ((op >> 5) & 3)
            match((h << 3) + ((op >> 2) & 7) + 1, length)
            state = op & 3
        if state:
            ip = literals(state, ip)
    raise LzoError("too many instructions")
