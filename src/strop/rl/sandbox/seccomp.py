"""The sandbox's seccomp filter: system calls the kernel refuses to sandboxed code, whatever language
(Python or native machine code) makes them.

Built with libseccomp (through `pyseccomp`, a ctypes binding) rather than as hand-written BPF, because
libseccomp resolves names to numbers per architecture and rejects the other ABIs the kernel accepts
(x32 numbers, i386 calls through int 0x80) — the classic holes of home-made filters. The compiled
program is handed to bubblewrap (`--seccomp FD`), which loads it just before it starts the child, so it
binds the interpreter from its first instruction and everything that process could ever start.

Refused, with EPERM unless said otherwise:
- sockets of any family but AF_UNIX (EAFNOSUPPORT): no IP, netlink, packet or vsock traffic even if
  the network namespace were missing;
- new processes: fork, vfork, and clone without CLONE_THREAD (threads stay possible); clone3 answers
  ENOSYS, so the C library falls back to clone, where the flags can be checked;
- reaching other processes or the kernel's insides: ptrace, process_vm_readv/writev, kcmp, pidfd_open,
  pidfd_getfd, perf_event_open, bpf, userfaultfd, keyctl, add_key, request_key, io_uring_*;
- changing the file system view or the namespaces: mount and the new mount API, umount2, pivot_root,
  chroot, unshare, setns, open_by_handle_at, name_to_handle_at;
- the rest of the usual container deny list: modules, kexec, reboot, swap, accounting, clocks,
  quotas, I/O ports, personality, NUMA policy, syslog, vhangup, and TIOCSTI (typing into a terminal).
"""

from __future__ import annotations

import errno
import functools
import socket
import tempfile

CLONE_THREAD = 0x00010000
TIOCSTI = 0x5412

DENIED = (
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_open",
    "pidfd_getfd",
    "perf_event_open",
    "bpf",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "quotactl_fd",
    "iopl",
    "ioperm",
    "personality",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "move_pages",
    "syslog",
    "vhangup",
    "lookup_dcookie",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "fanotify_init",
)


def unavailable() -> str | None:
    """Why the filter cannot be built here (and how to fix it), or None when it can."""
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError) as error:
        return (
            f"the seccomp filter needs libseccomp and its Python binding ({error}); install them with "
            "`apt-get install libseccomp2` and `pip install pyseccomp`"
        )
    return None


@functools.cache
def program() -> bytes:
    """The filter as a BPF program for this machine's architecture, built once."""
    import pyseccomp as seccomp

    refuse = seccomp.ERRNO(errno.EPERM)
    native = seccomp.system_arch()
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        if seccomp.resolve_syscall(native, name) >= 0:  # a name this architecture lacks has nothing to refuse
            rules.add_rule(refuse, name)
    for name in ("socket", "socketpair"):
        rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), name, seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.add_rule(refuse, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()
