#!/usr/bin/env python3
"""Deterministic initramfs writer (cpio "newc"), reading a gen_init_cpio-style list.

Why not `cpio`: it copies inode numbers, mtimes and owners from the build machine, so
two builds of the same files differ byte for byte, and so would the launch measurement
(the initrd's SHA-256 is in the measured SEV hashes table). Here every header field is a
function of the list alone: inodes count up from 1, mtime is SOURCE_DATE_EPOCH (default
0), owners are 0:0 unless the list says otherwise, no device numbers for the archive.

List format (same as the kernel's usr/gen_init_cpio), one entry per line, '#' comments:
    dir   <name> <mode> <uid> <gid>
    file  <name> <source> <mode> <uid> <gid>
    slink <name> <target> <mode> <uid> <gid>
    nod   <name> <mode> <uid> <gid> <c|b> <major> <minor>

Usage: mkcpio.py LIST OUT
"""
import os
import sys


def header(ino, mode, uid, gid, nlink, mtime, size, rmaj, rmin, name):
    fields = [ino, mode, uid, gid, nlink, mtime, size, 0, 0, rmaj, rmin, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def pad4(n):
    return (4 - n % 4) % 4


def entry(out, ino, mode, uid, gid, mtime, name, data=b"", nlink=1, rmaj=0, rmin=0):
    name_b = name.encode()
    h = header(ino, mode, uid, gid, nlink, mtime, len(data), rmaj, rmin, name_b)
    out.write(h + name_b + b"\0" + b"\0" * pad4(len(h) + len(name_b) + 1))
    out.write(data + b"\0" * pad4(len(data)))


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    list_path, out_path = argv[1], argv[2]
    base = os.path.dirname(os.path.abspath(list_path))
    seen = set()
    with open(list_path) as f, open(out_path + ".tmp", "wb") as out:
        ino = 0
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            w = line.split()
            kind, name = w[0], w[1].lstrip("/")
            if not name or name in seen or ".." in name.split("/"):
                raise SystemExit(f"{list_path}:{lineno}: bad or duplicate name {w[1]!r}")
            parent = os.path.dirname(name)
            if parent and parent not in seen:
                raise SystemExit(f"{list_path}:{lineno}: {name}: parent directory not listed first")
            seen.add(name)
            ino += 1
            try:
                if kind == "dir":
                    mode, uid, gid = int(w[2], 8), int(w[3]), int(w[4])
                    entry(out, ino, 0o040000 | mode, uid, gid, mtime, name, nlink=2)
                elif kind == "file":
                    src = w[2] if os.path.isabs(w[2]) else os.path.join(base, w[2])
                    with open(src, "rb") as s:
                        data = s.read()
                    mode, uid, gid = int(w[3], 8), int(w[4]), int(w[5])
                    entry(out, ino, 0o100000 | mode, uid, gid, mtime, name, data)
                elif kind == "slink":
                    mode, uid, gid = int(w[3], 8), int(w[4]), int(w[5])
                    entry(out, ino, 0o120000 | mode, uid, gid, mtime, name, w[2].encode())
                elif kind == "nod":
                    mode, uid, gid = int(w[2], 8), int(w[3]), int(w[4])
                    typ = {"c": 0o020000, "b": 0o060000}[w[5]]
                    entry(out, ino, typ | mode, uid, gid, mtime, name, rmaj=int(w[6]), rmin=int(w[7]))
                else:
                    raise SystemExit(f"{list_path}:{lineno}: unknown entry type {kind!r}")
            except (IndexError, ValueError, KeyError) as e:
                raise SystemExit(f"{list_path}:{lineno}: malformed entry: {e}")
        entry(out, 0, 0, 0, 0, 0, "TRAILER!!!")
    os.replace(out_path + ".tmp", out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
