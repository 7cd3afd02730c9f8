"""Just enough ELF and CUDA fat-binary reading to check a built plugin without binutils or cuobjdump.

:func:`read_elf` lists a shared object's exported and imported dynamic symbols and its DT_NEEDED libraries;
:func:`fatbin_entries` lists the device images nvcc embedded (section ``.nv_fatbin``): one entry per
architecture, ``kind`` "sass" (a cubin for that SM) or "ptx" (virtual architecture code JIT-compiled by the
driver on newer GPUs). Only 64-bit little-endian files are handled (x86-64 / aarch64 Linux).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ElfError", "ElfInfo", "FatbinEntry", "fatbin_entries", "read_elf"]

_SHT_DYNSYM = 11
_SHT_DYNAMIC = 6
_DT_NEEDED = 1
_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_KINDS = {1: "ptx", 2: "sass"}
_FATBIN_COMPRESSED = 0x2000 | 0x8000  # LZ4-style and zstd compression flags


class ElfError(ValueError):
    """The file is not a 64-bit little-endian ELF this reader understands."""


@dataclass
class ElfInfo:
    sections: dict[str, tuple[int, int]]  # name -> (file offset, size)
    exported: set[str] = field(default_factory=set)  # defined global/weak dynamic symbols
    imported: set[str] = field(default_factory=set)  # undefined dynamic symbols (unversioned names)
    needed: list[str] = field(default_factory=list)
    data: bytes = b""


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "sass" or "ptx"
    arch: int  # 80, 86, 89, 90, ...
    compressed: bool
    payload: bytes  # the cubin / PTX bytes as stored (possibly compressed)


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def read_elf(path: str | os.PathLike) -> ElfInfo:
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise ElfError(f"{path} is not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path} is not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shentsize < 64 or shoff + shnum * shentsize > len(data):
        raise ElfError(f"{path} has no readable section table")
    headers = []
    for i in range(shnum):
        name, kind, _flags, _addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize)
        headers.append((name, kind, offset, size, link, entsize))
    shstr_off, shstr_size = headers[shstrndx][2], headers[shstrndx][3]
    shstr = data[shstr_off:shstr_off + shstr_size]
    info = ElfInfo(sections={}, data=data)
    for name, kind, offset, size, link, entsize in headers:
        info.sections[_cstr(shstr, name)] = (offset, size)
    for name, kind, offset, size, link, entsize in headers:
        if kind == _SHT_DYNSYM:
            strtab = data[headers[link][2]:headers[link][2] + headers[link][3]]
            for k in range(1, size // (entsize or 24)):
                st_name, st_info, _other, st_shndx, _value, _size = struct.unpack_from("<IBBHQQ", data, offset + k * 24)
                symbol = _cstr(strtab, st_name)
                binding = st_info >> 4
                if not symbol:
                    continue
                if st_shndx == 0:
                    info.imported.add(symbol)
                elif binding in (1, 2):  # GLOBAL, WEAK
                    info.exported.add(symbol)
        elif kind == _SHT_DYNAMIC:
            strtab = data[headers[link][2]:headers[link][2] + headers[link][3]]
            for k in range(size // 16):
                tag, value = struct.unpack_from("<qQ", data, offset + k * 16)
                if tag == 0:
                    break
                if tag == _DT_NEEDED:
                    info.needed.append(_cstr(strtab, value))
    return info


def fatbin_entries(path: str | os.PathLike, elf: ElfInfo | None = None) -> list[FatbinEntry]:
    """Device images in the ``.nv_fatbin`` section (empty when the file has no device code)."""
    elf = elf or read_elf(path)
    if ".nv_fatbin" not in elf.sections:
        return []
    offset, size = elf.sections[".nv_fatbin"]
    blob = elf.data[offset:offset + size]
    entries: list[FatbinEntry] = []
    pos = 0
    while pos + 16 <= len(blob):
        magic, _version, header_size, body_size = struct.unpack_from("<IHHQ", blob, pos)
        if magic != _FATBIN_MAGIC:
            pos += 8  # containers are 8-byte aligned; skip padding
            continue
        at, end = pos + header_size, pos + header_size + body_size
        while at + 64 <= end:
            kind, _ver, entry_header, payload_size = struct.unpack_from("<HHIQ", blob, at)
            arch, = struct.unpack_from("<I", blob, at + 28)
            flags, = struct.unpack_from("<Q", blob, at + 40)
            start = at + entry_header
            entries.append(FatbinEntry(kind=_FATBIN_KINDS.get(kind, f"kind{kind}"), arch=int(arch),
                                       compressed=bool(flags & _FATBIN_COMPRESSED),
                                       payload=blob[start:start + payload_size]))
            if entry_header == 0:
                break
            at = start + payload_size
        pos = end
    return entries
