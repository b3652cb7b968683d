"""The seccomp filter bwrap installs before it execs a sandboxed command (``--seccomp FD``).

bwrap's namespaces already take away most of what these calls could do (no capabilities, no
nested user namespaces); the filter removes the kernel code behind them from the program's reach,
so a kernel bug there is not a way out. It blocks, with EPERM:

- other processes' memory and control: ptrace, process_vm_readv, process_vm_writev;
- the kernel keyring: keyctl, add_key, request_key;
- mounts and namespaces: mount, umount2, pivot_root, mount_setattr, move_mount, open_tree,
  fsopen, fsconfig, fsmount, fspick, unshare, setns, open_by_handle_at;
- large, often-exploited kernel interfaces: bpf, perf_event_open, userfaultfd and io_uring
  (io_uring_setup, io_uring_enter, io_uring_register; libuv and others fall back to plain I/O);
- administration: kexec_load, kexec_file_load, init_module, finit_module, delete_module, swapon,
  swapoff, reboot, acct, quotactl, quotactl_fd.

Everything else is allowed (a default-allow list, not a whitelist: Python, g++, the JVM and node
must keep working). The filter first checks the architecture of the call: on x86-64 the 32-bit
ABI (int 0x80, AUDIT_ARCH_I386) would reach the same calls under other numbers, so a call of any
other architecture kills the process, and x32 calls (the syscall bit 0x40000000 set) get EPERM.
Only x86-64 and aarch64 have tables here; elsewhere filter_program() returns None and bwrap runs
without a filter (the result still says isolation="bwrap": the namespaces are unchanged).
"""

import errno
import functools
import platform
import struct

# Classic BPF opcodes (linux/filter.h) and the seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
# struct seccomp_data: int nr; __u32 arch; ...
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_X32_SYSCALL_BIT = 0x40000000

# Blocked calls by name; numbers per architecture from the kernel's uapi headers
# (asm/unistd_64.h for x86-64, asm-generic/unistd.h for aarch64).
_BLOCKED = {
    #  name:               (x86_64, aarch64)
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "mount_setattr": (442, 442),
    "move_mount": (429, 429),
    "open_tree": (428, 428),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "unshare": (272, 97),
    "setns": (308, 268),
    "open_by_handle_at": (304, 265),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
}
# platform.machine() -> (AUDIT_ARCH_* of linux/audit.h, column in _BLOCKED, has an x32 ABI).
_ARCHES = {
    "x86_64": (0xC000003E, 0, True),
    "aarch64": (0xC00000B7, 1, False),
}
BLOCKED = tuple(sorted(_BLOCKED))


def _insn(code, k, jt=0, jf=0):
  return struct.pack("=HBBI", code, jt, jf, k)


@functools.cache
def filter_program(machine=None):
  """The filter as bwrap reads it (an array of struct sock_filter), or None on other arches."""
  machine = machine or platform.machine()
  if machine not in _ARCHES:
    return None
  arch, column, has_x32 = _ARCHES[machine]
  numbers = sorted({row[column] for row in _BLOCKED.values()})
  deny = _RET_ERRNO | errno.EPERM
  # Layout: [arch check] [load nr] [x32 check] [one jeq per number] ALLOW DENY KILL; jump
  # offsets count instructions after the jumping one.
  body = [_insn(_LD_W_ABS, _OFFSET_NR)]
  tail = len(numbers)  # instructions between the x32 check and ALLOW
  if has_x32:
    body.append(_insn(_JGE_K, _X32_SYSCALL_BIT, jt=tail + 1, jf=0))
  for i, nr in enumerate(numbers):
    body.append(_insn(_JEQ_K, nr, jt=len(numbers) - i, jf=0))
  body += [_insn(_RET_K, _RET_ALLOW), _insn(_RET_K, deny)]
  head = [_insn(_LD_W_ABS, _OFFSET_ARCH), _insn(_JEQ_K, arch, jt=0, jf=len(body))]
  program = head + body + [_insn(_RET_K, _RET_KILL_PROCESS)]
  if len(program) > 255:  # jt/jf are 8-bit
    raise AssertionError("seccomp program too long for 8-bit jumps")
  return b"".join(program)
