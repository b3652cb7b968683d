"""A run's total budget of memory and processes: a cgroup per run, else a polled equivalent.

RLIMIT_AS and RLIMIT_NPROC bound each process, not the run: a program that forks 64 children of
memory_mb each commits 64 times its memory, and a few such runs in parallel bring the host down
through its OOM killer. The budget caps the run's processes together:

- ``cgroup2``: where a cgroup v2 hierarchy offers the memory and pids controllers and we may write
  it (root, or $SEEDCODER_SANDBOX_CGROUP naming a delegated cgroup): one child of
  ``seedcoder-sandbox`` per run with memory.max, memory.swap.max = 0, pids.max and
  memory.oom.group (an OOM kill takes the whole run); OOM kills are read from memory.events.
- ``cgroup1``: where memory and pids are separate v1 hierarchies we may write (root): one cgroup
  per run in each, memory.limit_in_bytes (and memory.memsw.limit_in_bytes, so swap is no way
  around it), pids.max; OOM kills are read from memory.oom_control (memory.failcnt on kernels
  without its oom_kill line). v1 has no group kill, so the supervisor kills the rest of the run
  once it sees one.
- ``polled``: everywhere else (e.g. not root, no delegated cgroup). The supervisor polls the run's
  processes every POLL_S (those of the run's sandbox uid, or without one the command's session and
  descendants), sums their resident memory and kills the run past the budget. Being polled, it is
  late by what the run touches in one interval (~tens of MB to a few hundred at memory bandwidth),
  and shared pages count once per process; every process stays under RLIMIT_AS, so the overshoot
  never exceeds max_procs x RLIMIT_AS, the bound before budgets. The process count is left to
  RLIMIT_NPROC, exact per leased uid.

A command enters its cgroup before it can fork: process.execute starts it through a shell (GATE)
that stops itself (SIGSTOP) before it execs the command; the supervisor, whose credentials may,
writes that pid into the cgroup and only then continues it. No preexec_fn (unsafe in the threads
of the pool), no cgroup file writable by the sandbox uid.

Run cgroups are named after the leased sandbox uid (exclusive, see isolation.lease_uid), so a
run that finds its cgroup already there knows it is the leftover of a dead run and removes it
first (killing what is left in it), as lease_uid does for a dead run's processes. Without a uid
they are named after the supervisor's pid; leftovers of dead supervisors go when a process first
uses the parent.
"""

import contextlib
import dataclasses
import functools
import itertools
import os
import signal
import subprocess
import threading
import time

_PARENT = "seedcoder-sandbox"
_DELEGATED_ENV = "SEEDCODER_SANDBOX_CGROUP"
POLL_S = 0.05
_counter = itertools.count()
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class Limits:
  """One run's budget: bytes of memory (RAM, tmpfs included), tasks (processes + threads)."""
  memory_bytes: int
  tasks: int


def _read(path):
  with open(path, encoding="ascii") as f:
    return f.read()


def _write(path, value):
  with open(path, "w", encoding="ascii") as f:
    f.write(str(value))


def _keyed(text):
  """{key: int} of a "key value" per line file (memory.events, memory.oom_control)."""
  out = {}
  for line in text.splitlines():
    key, _, value = line.partition(" ")
    if value.strip().lstrip("-").isdigit():
      out[key] = int(value)
  return out


def _cgroup_mounts():
  """(cgroup2 mount points, {v1 controller: mount point}) from /proc/self/mountinfo."""
  v2, v1 = [], {}
  with open("/proc/self/mountinfo", encoding="utf-8") as f:
    for line in f:
      fields = line.split()
      sep = fields.index("-")
      mount_point, fstype, options = fields[4], fields[sep + 1], fields[sep + 3].split(",")
      if fstype == "cgroup2":
        v2.append(mount_point)
      elif fstype == "cgroup":
        for name in ("memory", "pids"):
          if name in options:
            v1.setdefault(name, mount_point)
  return v2, v1


class _Cgroup:
  """One run's cgroup(s): created with limits, entered by pid, emptied and removed on close."""
  name = ""
  poll_s = POLL_S

  def __init__(self, dirs):
    self.dirs = dirs  # every directory of the run (one for v2, one per v1 hierarchy)
    self.peak_bytes = None
    self._oom = False

  def attach(self, pid):
    for d in self.dirs:
      _write(os.path.join(d, "cgroup.procs"), pid)

  def exceeded(self):
    """Whether the kernel OOM-killed a process of the run (cheap: one small file read)."""
    self._oom = self._oom or self._oom_kills() > 0
    return self._oom

  def kill(self):
    """SIGKILLs every process left in the run's cgroups."""
    for d in self.dirs:
      _kill_listed(d)

  def close(self):
    """Kills what is left, records OOM and peak, removes the cgroups."""
    with contextlib.suppress(OSError):
      self.exceeded()
      self.peak_bytes = self._peak()
    for d in self.dirs:
      with contextlib.suppress(OSError):  # still busy: the next run of this name removes it
        _remove(d)

  @property
  def oom(self):
    return self._oom


class _Cgroup1(_Cgroup):
  name = "cgroup1"

  def __init__(self, parents, leaf, limits):
    super().__init__([os.path.join(p, leaf) for p in parents])
    self.memory_dir, self.pids_dir = self.dirs
    for d in self.dirs:
      _remove(d)  # a dead run's leftover
      os.mkdir(d)
    _write(os.path.join(self.memory_dir, "memory.limit_in_bytes"), limits.memory_bytes)
    memsw = os.path.join(self.memory_dir, "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):  # only with swap accounting
      _write(memsw, limits.memory_bytes)
    _write(os.path.join(self.pids_dir, "pids.max"), limits.tasks)

  def _oom_kills(self):
    control = _keyed(_read(os.path.join(self.memory_dir, "memory.oom_control")))
    if "oom_kill" in control:
      return control["oom_kill"]
    # Kernels before 4.13: failcnt counts every charge that hit the limit (reclaim may have
    # saved it), the closest sign there is.
    return int(_read(os.path.join(self.memory_dir, "memory.failcnt")))

  def _peak(self):
    return int(_read(os.path.join(self.memory_dir, "memory.max_usage_in_bytes")))


class _Cgroup2(_Cgroup):
  name = "cgroup2"

  def __init__(self, parent, leaf, limits):
    super().__init__([os.path.join(parent, leaf)])
    (self.dir,) = self.dirs
    _remove(self.dir)  # a dead run's leftover
    os.mkdir(self.dir)
    _write(os.path.join(self.dir, "memory.max"), limits.memory_bytes)
    for name, value in (("memory.swap.max", 0), ("memory.oom.group", 1)):
      if os.path.exists(os.path.join(self.dir, name)):
        _write(os.path.join(self.dir, name), value)
    _write(os.path.join(self.dir, "pids.max"), limits.tasks)

  def _oom_kills(self):
    return _keyed(_read(os.path.join(self.dir, "memory.events"))).get("oom_kill", 0)

  def _peak(self):
    peak = os.path.join(self.dir, "memory.peak")  # kernels from 5.19
    return int(_read(peak)) if os.path.exists(peak) else None

  def kill(self):
    kill_file = os.path.join(self.dir, "cgroup.kill")  # kernels from 5.14: atomic, fork-proof
    if os.path.exists(kill_file):
      _write(kill_file, 1)
    else:
      super().kill()


def _kill_listed(d):
  try:
    pids = _read(os.path.join(d, "cgroup.procs")).split()
  except OSError:
    return
  for pid in pids:
    with contextlib.suppress(ProcessLookupError):
      os.kill(int(pid), signal.SIGKILL)


def _remove(d, wait_s=2.0):
  """Removes a run cgroup, killing what is in it; dying tasks hold it a moment (EBUSY).

  Raises OSError if it is still busy after wait_s (close() leaves it to the uid's next run).
  """
  deadline = time.monotonic() + wait_s
  while True:
    if not os.path.isdir(d):
      return
    _kill_listed(d)
    try:
      os.rmdir(d)
      return
    except FileNotFoundError:
      return
    except OSError:
      if time.monotonic() > deadline:
        raise
      time.sleep(0.002)


class _Polled:
  """The supervisor's own accounting: resident memory of the run's processes, polled."""
  name = "polled"
  poll_s = POLL_S

  def __init__(self, limits, uid):
    self.limits, self.uid = limits, uid
    self.root = None
    self.peak_bytes = 0
    self.oom = False
    self._last = 0.0

  def attach(self, pid):
    self.root = pid

  def exceeded(self):
    now = time.monotonic()
    if self.root is None or self.oom or now - self._last < self.poll_s:
      return self.oom
    self._last = now
    used = sum(_rss(pid) for pid in self._pids())
    self.peak_bytes = max(self.peak_bytes, used)
    self.oom = used > self.limits.memory_bytes
    return self.oom

  def _pids(self):
    """The run's pids: its uid's, else its session's and the command's descendants."""
    if self.uid is not None:
      for name in os.listdir("/proc"):
        if name.isdigit():
          with contextlib.suppress(OSError):
            if os.stat(f"/proc/{name}").st_uid == self.uid:
              yield int(name)
      return
    parents, members = {}, {self.root}
    for name in os.listdir("/proc"):
      if name.isdigit():
        with contextlib.suppress(OSError, ValueError, IndexError):
          fields = _read(f"/proc/{name}/stat").rpartition(")")[2].split()
          parents[int(name)] = int(fields[1])
          if int(fields[3]) == self.root:  # the session id
            members.add(int(name))
    grew = True
    while grew:  # descendants (bwrap's processes start sessions of their own)
      new = {p for p, pp in parents.items() if pp in members} - members
      members |= new
      grew = bool(new)
    yield from members

  def kill(self):
    pass  # the supervisor's kill_tree does it

  def close(self):
    self.exceeded()
    self.peak_bytes = self.peak_bytes or None


def _rss(pid):
  try:
    return int(_read(f"/proc/{pid}/statm").split()[1]) * _PAGE
  except (OSError, ValueError, IndexError):
    return 0


# ------------------------------------------------------------------- choosing a mode

_setup_lock = threading.Lock()


def _v2_parent(mount_point):
  """The cgroup2 parent of run cgroups, created with memory and pids enabled for its children."""
  delegated = os.environ.get(_DELEGATED_ENV)
  parent = delegated or os.path.join(mount_point, _PARENT)
  base = os.path.dirname(parent)
  with _setup_lock:
    if not delegated:
      enabled = _read(os.path.join(base, "cgroup.subtree_control")).split()
      if not {"memory", "pids"} <= set(enabled):
        _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids")
    os.makedirs(parent, exist_ok=True)
    if not {"memory", "pids"} <= set(_read(os.path.join(parent, "cgroup.controllers")).split()):
      raise OSError(f"{parent} lacks the memory or pids controller")
    _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
  return parent


def _candidates():
  """(name, factory(leaf, limits)) for each cgroup mode this host may offer, strongest first."""
  v2, v1 = _cgroup_mounts()
  found = []
  for mount_point in v2:
    root_controllers = os.path.join(mount_point, "cgroup.controllers")
    if os.path.exists(root_controllers) and {"memory", "pids"} <= set(_read(root_controllers)
                                                                        .split()):
      found.append(("cgroup2", mount_point))
      break
  if "memory" in v1 and "pids" in v1:
    found.append(("cgroup1", (v1["memory"], v1["pids"])))
  return found


def _factory(name, where):
  if name == "cgroup2":
    parent = _v2_parent(where)
    _sweep([parent])
    return lambda leaf, limits: _Cgroup2(parent, leaf, limits)
  parents = [os.path.join(m, _PARENT) for m in where]
  with _setup_lock:
    for p in parents:
      os.makedirs(p, exist_ok=True)
  _sweep(parents)
  return lambda leaf, limits: _Cgroup1(parents, leaf, limits)


def _sweep(parents):
  """Removes run cgroups of supervisors that died (named run-PID-N; uid ones go on reuse)."""
  for parent in parents:
    for leaf in os.listdir(parent):
      if leaf.startswith("run-"):
        pid = int(leaf.split("-")[1])
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
          with contextlib.suppress(OSError):
            _remove(os.path.join(parent, leaf))


@functools.cache
def mode():
  """(name, factory or None, why): the budget this process uses, probed once.

  A mode is used only after a probe run entered a cgroup of it: a process stopped at the gate,
  attached, seen in cgroup.procs, continued and removed with its cgroup. `why` says why stronger
  modes were passed over.
  """
  why = []
  for name, where in _candidates():
    try:
      factory = _factory(name, where)
      _probe(factory)
      return name, factory, "; ".join(why)
    except OSError as e:
      why.append(f"{name}: {e}")
  if not why:
    why.append("no writable cgroup v2 with memory+pids, nor cgroup v1 memory and pids")
  return "polled", None, "; ".join(why)


def _probe(factory):
  cgroup = factory(f"run-{os.getpid()}-probe{next(_counter)}", Limits(64 << 20, 8))
  proc = subprocess.Popen(GATE + ["/bin/true"], start_new_session=True)
  try:
    wait_at_gate(proc.pid)
    cgroup.attach(proc.pid)
    if str(proc.pid) not in _read(os.path.join(cgroup.dirs[0], "cgroup.procs")).split():
      raise OSError("the probe process did not enter its cgroup")
    os.kill(proc.pid, signal.SIGCONT)
    if proc.wait(10) != 0:
      raise OSError(f"the probe process exited {proc.returncode}")
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    cgroup.close()


# The prefix that holds a command until it is in its cgroup: the shell stops itself; the supervisor
# attaches it and sends SIGCONT; only then does it exec the command (dash: no fork in between).
GATE = ["/bin/sh", "-c", 'kill -STOP $$ && exec "$@"', "sh"]


def wait_at_gate(pid):
  """Waits until the gated command stopped at the gate; False if it died first (not reaped)."""
  info = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
  return info.si_code == os.CLD_STOPPED


def open_budget(limits, *, uid):
  """A budget for one run step: its cgroup (created now) or the polled accounting.

  The caller passes it to process.execute, which attaches the command and polls it, and closes
  it after the run (budget.oom, budget.peak_bytes are final then).
  """
  name, factory, _ = mode()
  if factory is None:
    return _Polled(limits, uid)
  leaf = f"uid-{uid}" if uid is not None else f"run-{os.getpid()}-{next(_counter)}"
  return factory(leaf, limits)
