"""Runs one wrapped command: feeds stdin, caps output, enforces the wall clock, kills the tree."""

import dataclasses
import errno
import fcntl
import os
import selectors
import shutil
import signal
import subprocess
import time

from seedcoder_jax.sandbox import budget as budget_mod

_CHUNK = 1 << 16


@dataclasses.dataclass
class RawRun:
  """What happened to one command, before any interpretation.

  Attributes:
    returncode: exit status as os.waitstatus_to_exitcode gives it (negative: killed by a signal).
    stdout, stderr: captured bytes, each cut at the output cap.
    timed_out: the wall clock ran out and the tree was killed.
    output_limited: stdout + stderr passed the cap and the tree was killed.
    wall_s: seconds from start to the end of the tree.
    cpu_s: user + system CPU seconds of the command and every descendant it reaped.
    over_budget: the run's memory budget killed it (budget.py: an OOM kill in its cgroup, or
      the polled total past the budget); the tree was killed.
  """
  returncode: int
  stdout: bytes
  stderr: bytes
  timed_out: bool
  output_limited: bool
  wall_s: float
  cpu_s: float
  over_budget: bool = False


def memfd(name, data, *, sealed=True):
  """An in-memory file holding data, positioned at 0 (for stdin and bwrap's --file).

  Sealed (no write, grow or shrink) unless asked otherwise: the sandboxed program inherits the fd,
  and an unsealed memfd would let it store memory outside its address-space limit. The fd number
  is at least 10: the shell wrapper inside the sandbox uses fd 9 for itself, and dash cannot name
  fds above 9, so no inherited fd may land there.
  """
  low = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
  fd = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 10)
  os.close(low)
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]
  os.lseek(fd, 0, os.SEEK_SET)
  if sealed:
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_WRITE |
                fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
  return fd


def execute(argv, *, stdin=b"", timeout_s, max_output_bytes, pass_fds=(), uid=None, cwd=None,
            env=None, kill_tree=None, tree_dies_with_command=False, budget=None):
  """Runs argv in a new session and supervises it until it and its tree are gone.

  Args:
    argv: the full command (isolation prefix included).
    stdin: bytes given to the command's stdin (an in-memory file, so no writer thread).
    timeout_s: wall-clock limit; past it the tree is killed.
    max_output_bytes: cap on stdout + stderr together; past it the tree is killed.
    pass_fds: fds the command inherits (bwrap's --file sources).
    uid: run as this uid and gid with no supplementary groups (None: as the caller).
    cwd, env: for the command (None: inherit).
    kill_tree: callable that kills every process the run left (called after the command exits or
      is killed); None: kill the command's process group only.
    tree_dies_with_command: the command's exit already ends its whole tree (bwrap: its init
      takes the pid namespace down), so kill_tree is only needed when the command is killed.
    budget: a budget.open_budget() object, or None. The command starts behind budget.GATE and
      is attached to the budget before it execs (so before it can fork); the budget is polled
      every budget.poll_s and the tree killed once it says the run exceeded it.

  Returns:
    RawRun.
  """
  if budget is not None:
    # The gate shell would report a missing command as its own exit 127: fail as Popen would.
    if shutil.which(argv[0], path=os.pathsep.join(os.get_exec_path(env))) is None:
      raise FileNotFoundError(errno.ENOENT, "No such file or directory", argv[0])
    argv = budget_mod.GATE + list(argv)
  stdin_fd = memfd("stdin", stdin)
  start = time.monotonic()
  try:
    proc = subprocess.Popen(
        argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        pass_fds=tuple(pass_fds),
        cwd=cwd, env=env, start_new_session=True, user=uid, group=uid,
        extra_groups=[] if uid is not None else None)
  finally:
    os.close(stdin_fd)

  def kill_all(after_exit=False):
    # The session's process group first (works without root), then everything the uid owns.
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    if kill_tree is not None and not (after_exit and tree_dies_with_command):
      kill_tree()

  out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
  bufs = {out_fd: bytearray(), err_fd: bytearray()}
  timed_out = limited = over_budget = False
  exited = None
  pidfd = os.pidfd_open(proc.pid)
  sel = selectors.DefaultSelector()
  try:
    if budget is not None and budget_mod.wait_at_gate(proc.pid):
      budget.attach(proc.pid)  # raises (the finally kills the command) if it cannot
      os.kill(proc.pid, signal.SIGCONT)
    for fd in bufs:
      os.set_blocking(fd, False)
      sel.register(fd, selectors.EVENT_READ)
    sel.register(pidfd, selectors.EVENT_READ)
    total = 0
    deadline = start + timeout_s
    while not limited:
      if exited is None:
        wait = deadline - time.monotonic()
        if wait <= 0:
          timed_out = True
          break
        if budget is not None:
          if budget.exceeded():
            over_budget = True
            break
          wait = min(wait, budget.poll_s)
      else:
        # The tree is dead, so every pipe reaches EOF at once; the bound is only a safeguard.
        wait = drain_deadline - time.monotonic()
        if not sel.get_map() or wait <= 0:
          break
      for key, _ in sel.select(timeout=wait):
        if key.fd == pidfd:
          sel.unregister(pidfd)
          # Background processes holding our pipes die now; before the reap, while the command
          # is a zombie, so its pid (the group id) cannot have been reused.
          kill_all(after_exit=True)
          exited = _reap(proc)
          drain_deadline = time.monotonic() + 2.0
          continue
        try:
          chunk = os.read(key.fd, _CHUNK)
        except BlockingIOError:
          continue
        if not chunk:
          sel.unregister(key.fd)
          continue
        bufs[key.fd] += chunk
        total += len(chunk)
        if total > max_output_bytes:
          limited = True
          break
  finally:
    # Also when supervision itself failed (an exception, KeyboardInterrupt): nothing outlives it.
    if exited is None:
      kill_all()
      exited = _reap(proc)
    sel.close()
    os.close(pidfd)
    proc.stdout.close()
    proc.stderr.close()
  code, cpu_s = exited
  stdout = bytes(bufs[out_fd][:max_output_bytes])
  stderr = bytes(bufs[err_fd][:max(max_output_bytes - len(stdout), 0)])
  return RawRun(returncode=code, stdout=stdout, stderr=stderr, timed_out=timed_out,
                output_limited=limited, wall_s=time.monotonic() - start, cpu_s=cpu_s,
                over_budget=over_budget)


def _reap(proc):
  """Waits for the command; returns (exit code, CPU seconds of it and its reaped descendants)."""
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, usage.ru_utime + usage.ru_stime
