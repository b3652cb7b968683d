"""run_code: one untrusted program, built and run under the strongest isolation available."""

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import tempfile

from seedcoder_jax.sandbox import budget as budget_mod
from seedcoder_jax.sandbox import isolation as iso
from seedcoder_jax.sandbox import languages
from seedcoder_jax.sandbox import process
from seedcoder_jax.sandbox import seccomp

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "compile_error", "sandbox_error")
_MB = 1 << 20
_ISOLATION_ENV = "SEEDCODER_SANDBOX_ISOLATION"
_TMPDIR_ENV = "SEEDCODER_SANDBOX_TMPDIR"
# Tasks of bwrap's own in a run's budget besides the program: its monitor, the pid namespace's
# init and the shell that reports CPU times.
_BWRAP_TASKS = 3


class SandboxUnavailable(ValueError):
  """Isolation was asked for (explicitly or by "auto") and bubblewrap cannot run here."""


@dataclasses.dataclass(frozen=True)
class Result:
  """The outcome of one run_code call.

  Attributes:
    status: one of STATUSES: "ok" (exit 0), "error" (non-zero exit or a signal), "timeout" (wall or
      CPU time), "memory" (an allocation failed at the memory limit, or the run's memory budget
      killed it, even if the program then exited 0), "output_limit" (stdout +
      stderr passed the cap; the run was killed), "compile_error", "sandbox_error" (the sandbox
      itself failed: no toolchain, bwrap could not start, ...).
    returncode: exit status; negative -N when killed by signal N; None if the program never ran.
    stdout, stderr: decoded output (UTF-8, invalid bytes replaced), cut at the output cap. For
      compile_error, stderr holds the compiler's diagnostics.
    isolation: "bwrap" or "rlimits" (the weaker level, only when asked for by name: no
      namespaces, no seccomp filter).
    budget: how the run's total memory and task budget was held (budget.py): "cgroup2" or
      "cgroup1" (a cgroup per run) or "polled" (the supervisor sums the run's resident memory).
    wall_s: wall-clock seconds of the run step (the build step excluded).
    cpu_s: CPU seconds of the program and the children it waited for. Under bwrap the shell that
      waits for the program reports them, so a killed run (timeout, output cap) shows ~0.
    compile_s: wall-clock seconds of the build step (0 for interpreted languages).
    memory_peak_mb: the run step's peak memory as its budget measured it (the cgroup's
      max_usage_in_bytes / memory.peak, RAM and tmpfs; polled: the largest sampled resident
      total); None where not measured.
  """
  status: str
  returncode: int | None
  stdout: str
  stderr: str
  isolation: str
  wall_s: float = 0.0
  cpu_s: float = 0.0
  compile_s: float = 0.0
  budget: str = ""
  memory_peak_mb: float | None = None

  @property
  def passed(self):
    return self.status == "ok"


def classify(raw, *, cpu_limit_s, memory_markers=languages.MEMORY_MARKERS):
  """The status of a finished run (a small pure function of what the supervisor saw)."""
  if raw.output_limited:
    return "output_limit"
  if raw.over_budget:
    return "memory"
  if raw.timed_out:
    return "timeout"
  if raw.returncode == 0:
    return "ok"
  # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one (for programs that ignore
  # SIGXCPU; the run's CPU time tells that SIGKILL from others).
  if raw.returncode == -signal.SIGXCPU or (raw.returncode == -signal.SIGKILL and
                                           raw.cpu_s >= cpu_limit_s - 0.05):
    return "timeout"
  if any(m in raw.stderr for m in memory_markers):
    return "memory"
  return "error"


def resolve_isolation(requested=None):
  """The isolation level to use: the request, else $SEEDCODER_SANDBOX_ISOLATION, else "auto".

  "auto" and "bwrap" both mean bwrap, which must start here (a probe sandbox, once per process):
  where it cannot, SandboxUnavailable (a ValueError) says why and how to opt in to the weaker
  level. "rlimits" (no namespaces: the host's files readable as the sandbox uid, the network
  open) is used only when asked for by name, never as a silent fallback: untrusted code without
  isolation is a decision for the user, not for the machine it happens to run on.
  """
  requested = requested or os.environ.get(_ISOLATION_ENV) or "auto"
  if requested not in ("auto", "bwrap", "rlimits"):
    raise ValueError(f"isolation must be 'auto', 'bwrap' or 'rlimits', got {requested!r} "
                     f"(argument or ${_ISOLATION_ENV})")
  if requested == "rlimits":
    return "rlimits"
  ok, why = iso.bwrap_works()
  if ok:
    return "bwrap"
  raise SandboxUnavailable(
      f"isolation={requested!r}: bubblewrap cannot run here ({why}), and untrusted code does not "
      f"run without it unless asked: set {_ISOLATION_ENV}=rlimits or pass isolation='rlimits' to "
      f"run it with rlimits only (no namespaces: the network stays open and the host's files "
      f"are readable as the sandbox uid)")


def _work_root():
  """Parent of the host work dirs: $SEEDCODER_SANDBOX_TMPDIR or /tmp/seedcoder-sandbox-work[-uid].

  Not tempfile's default: the sandbox uid must traverse every parent (bwrap binds the dir as that
  uid, and the fallback runs in it), which a private temp dir such as pytest's is not.
  """
  user = "" if os.geteuid() == 0 else f"-{os.geteuid()}"  # each user its own: root's is 0711.
  root = os.environ.get(_TMPDIR_ENV) or f"/tmp/seedcoder-sandbox-work{user}"
  os.makedirs(root, exist_ok=True)
  if os.stat(root).st_uid == os.geteuid():
    os.chmod(root, 0o711)  # others may pass through, not list.
  return root


def _decode(data):
  return data.decode("utf-8", errors="replace")


def _check(source, language, files, argv, **limits):
  if not isinstance(source, str):
    raise TypeError(f"run_code: source must be str, got {type(source).__name__}")
  if isinstance(argv, str) or not all(isinstance(a, str) for a in argv):
    raise TypeError(f"run_code: argv must be a sequence of str, got {argv!r}")
  languages.canonical(language)
  for name, value in limits.items():
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and value > 0 and math.isfinite(value)):
      raise ValueError(f"run_code: {name} must be a positive number, got {value!r}")
  for name in files or {}:
    norm = os.path.normpath(name)
    if os.path.isabs(name) or norm.startswith("..") or norm in (".", ""):
      raise ValueError(f"run_code: files key {name!r} must be a relative path inside the workdir")


def run_code(source, *, language="python", stdin="", timeout_s=10.0, memory_mb=512, files=None,
             argv=(), max_output_bytes=1 << 20, max_procs=64, max_file_mb=16, disk_mb=64,
             compile_timeout_s=60.0, isolation=None):
  """Runs untrusted source code in a sandbox and reports what happened.

  Args:
    source: the program text.
    language: "python", "cpp", "java" or "javascript" (aliases: py, c++, js, node).
    stdin: text or bytes given to the program's stdin (None: empty).
    timeout_s: wall-clock limit of the run step; the CPU-time limit is its ceiling.
    memory_mb: address-space limit (Python, C++) or heap limit (Java, JavaScript: see languages)
      of each process, and the run's total memory budget (all its processes together, budget.py)
      plus the runtime's resident allowance (languages.Plan.resident_allowance_bytes) and the
      private tmpfs (disk_mb and /dev/shm: their pages are memory).
    files: extra {relative path: str | bytes} placed beside the program (test harnesses); for
      Java, *.jar files among them join the class path.
    argv: extra command-line arguments for the program.
    max_output_bytes: cap on stdout + stderr together; past it the run is killed.
    max_procs: processes + threads the program may have (raised for the JVM and V8): its
      sandbox uid's RLIMIT_NPROC and the run's task budget (pids.max; bwrap's own tasks aside).
    max_file_mb: the largest file the program may write (RLIMIT_FSIZE).
    disk_mb: size of the private tmpfs that is its only writable place (bwrap).
    compile_timeout_s: wall-clock limit of the build step (C++, Java).
    isolation: "auto" (default) or "bwrap": bubblewrap, SandboxUnavailable where it cannot
      start; "rlimits": the weaker level, by name only (resolve_isolation). None reads
      $SEEDCODER_SANDBOX_ISOLATION.

  Returns:
    Result. Problems of the program never raise; bad arguments raise ValueError/TypeError, and
    SandboxUnavailable (a ValueError) when bwrap is needed and cannot start.
  """
  _check(source, language, files, argv, timeout_s=timeout_s, memory_mb=memory_mb,
         max_output_bytes=max_output_bytes, max_procs=max_procs, max_file_mb=max_file_mb,
         disk_mb=disk_mb, compile_timeout_s=compile_timeout_s)
  mode = resolve_isolation(isolation)
  missing = languages.toolchain_missing(language)
  if missing:
    return Result("sandbox_error", None, "", f"{language} toolchain missing: {missing} not on PATH",
                  mode)
  plan = languages.plan(language, source, memory_mb=int(memory_mb), argv=argv,
                        extra_files=[os.path.normpath(n) for n in files or {}])
  all_files = dict(plan.files)
  for name, data in (files or {}).items():
    all_files[os.path.normpath(name)] = data.encode() if isinstance(data, str) else bytes(data)
  stdin_bytes = stdin.encode() if isinstance(stdin, str) else bytes(stdin or b"")
  limits = dict(max_output_bytes=int(max_output_bytes), max_procs=int(max_procs),
                file_bytes=int(max_file_mb * _MB), tmpfs_bytes=int(disk_mb * _MB))
  # What the run's pages may add up to: the program's memory, its runtime's resident share and
  # its tmpfs (/tmp and /dev/shm, charged to the run as memory).
  tmpfs_total = limits["tmpfs_bytes"] + min(limits["tmpfs_bytes"], iso.SHM_BYTES)
  run_memory = int(memory_mb * _MB) + plan.resident_allowance_bytes + tmpfs_total
  budget_name = budget_mod.mode()[0]
  with iso.lease_uid() as uid, contextlib.ExitStack() as stack:
    workdir = None
    if mode == "rlimits" or plan.compile_argv is not None:
      workdir = tempfile.mkdtemp(prefix="run-", dir=_work_root())
      stack.callback(shutil.rmtree, workdir, ignore_errors=True)
      _write_tree(workdir, all_files, uid)
    compile_s = 0.0
    if plan.compile_argv is not None:
      raw = _step(mode, plan, plan.compile_argv, uid=uid, workdir=workdir, files=None,
                  stdin=b"", timeout_s=compile_timeout_s, cpu_s=math.ceil(compile_timeout_s),
                  address_space=languages.COMPILE_ADDRESS_SPACE_BYTES,
                  procs=max(languages.COMPILE_MIN_PROCS, max_procs), limits=limits,
                  writable_workdir=True,
                  memory_bytes=languages.COMPILE_MEMORY_BYTES + tmpfs_total)
      compile_s = raw.wall_s
      if raw.setup_failed:
        return Result("sandbox_error", None, "", _decode(raw.stderr), mode, compile_s=compile_s,
                      budget=budget_name)
      if raw.returncode != 0 or raw.timed_out or raw.output_limited or raw.over_budget:
        why = ("build timed out" if raw.timed_out else
               "build output over the cap" if raw.output_limited else
               "build over its memory budget" if raw.over_budget else "")
        return Result("compile_error", raw.returncode, _decode(raw.stdout),
                      _decode(raw.stderr) + why, mode, compile_s=compile_s, budget=budget_name)
      if mode == "bwrap":
        all_files = _read_tree(workdir)
    cpu_limit = max(1, math.ceil(timeout_s))
    raw = _step(mode, plan, plan.run_argv, uid=uid, workdir=workdir if mode == "rlimits" else None,
                files=all_files, stdin=stdin_bytes, timeout_s=timeout_s, cpu_s=cpu_limit,
                address_space=plan.address_space_bytes, procs=max(plan.min_procs, max_procs),
                limits=limits, writable_workdir=False, memory_bytes=run_memory)
    if raw.setup_failed:
      return Result("sandbox_error", None, "", _decode(raw.stderr), mode, compile_s=compile_s,
                    budget=budget_name)
    peak = raw.peak_bytes / _MB if raw.peak_bytes is not None else None
    return Result(classify(raw, cpu_limit_s=cpu_limit), raw.returncode, _decode(raw.stdout),
                  _decode(raw.stderr), mode, wall_s=raw.wall_s, cpu_s=raw.cpu_s,
                  compile_s=compile_s, budget=budget_name, memory_peak_mb=peak)


@dataclasses.dataclass
class _StepRun(process.RawRun):
  setup_failed: bool = False
  peak_bytes: int | None = None


def _setup_failure(message):
  return _StepRun(None, b"", message.encode(), False, False, 0.0, 0.0, setup_failed=True)


def _step(mode, plan, command, *, uid, workdir, files, stdin, timeout_s, cpu_s, address_space,
          procs, limits, writable_workdir, memory_bytes):
  """Runs one command (build or run) of a plan under the isolation mode and a budget."""
  # Without a uid of its own the program shares RLIMIT_NPROC's count with every process of the
  # caller's user: allow that many more.
  nproc = procs if uid is not None else procs + iso.user_task_count(os.getuid())
  rl = iso.prlimit_argv(cpu_s=cpu_s, address_space_bytes=address_space,
                        file_bytes=limits["file_bytes"], max_procs=nproc)
  tasks = procs + (_BWRAP_TASKS if mode == "bwrap" else 0)
  try:
    budget = budget_mod.open_budget(budget_mod.Limits(memory_bytes, tasks), uid=uid)
  except OSError as e:
    return _setup_failure(f"sandbox could not set up the run's budget: {e}")
  kill_tree = (lambda: iso.kill_uid(uid)) if uid is not None else budget.kill
  try:
    raw = _execute(mode, plan, command, rl, uid=uid, workdir=workdir, files=files, stdin=stdin,
                   timeout_s=timeout_s, limits=limits, writable_workdir=writable_workdir,
                   kill_tree=kill_tree, budget=budget)
  finally:
    budget.close()
  raw.over_budget = raw.over_budget or budget.oom
  raw.peak_bytes = budget.peak_bytes
  return raw


def _execute(mode, plan, command, rl, *, uid, workdir, files, stdin, timeout_s, limits,
             writable_workdir, kill_tree, budget):
  if mode == "rlimits":
    try:
      raw = process.execute(rl + command, stdin=stdin, timeout_s=timeout_s,
                            max_output_bytes=limits["max_output_bytes"], uid=uid, cwd=workdir,
                            env=iso.sandbox_env(workdir), kill_tree=kill_tree, budget=budget)
    except OSError as e:  # the command could not start (missing binary, exec refused)
      return _setup_failure(f"sandbox could not start {command[0]}: {e}")
    return _StepRun(**dataclasses.asdict(raw))
  with contextlib.ExitStack() as stack:
    file_fds = []
    for name, (data, mode_bits) in _with_modes(files or {}).items():
      fd = process.memfd(name, data)
      stack.callback(os.close, fd)
      file_fds.append((fd, os.path.join(iso.WORKDIR, name), mode_bits))
    cpu_fd = process.memfd("cpu", b"", sealed=False)
    stack.callback(os.close, cpu_fd)
    pass_fds = [fd for fd, _, _ in file_fds] + [cpu_fd]
    seccomp_fd = None
    program = seccomp.filter_program()
    if program is not None:  # one memfd per run: bwrap reads it from its offset
      seccomp_fd = process.memfd("seccomp", program)
      stack.callback(os.close, seccomp_fd)
      pass_fds.append(seccomp_fd)
    argv = iso.bwrap_argv(dirs=plan.dirs, files=file_fds,
                          host_workdir=workdir if writable_workdir else None,
                          tmpfs_bytes=limits["tmpfs_bytes"], seccomp_fd=seccomp_fd)
    try:
      raw = process.execute(argv + rl + iso.cpu_report_argv(cpu_fd) + command, stdin=stdin,
                            timeout_s=timeout_s, max_output_bytes=limits["max_output_bytes"],
                            pass_fds=pass_fds, uid=uid, kill_tree=kill_tree,
                            tree_dies_with_command=True, budget=budget)
    except OSError as e:
      return _setup_failure(f"sandbox could not start bwrap: {e}")
    return _interpret_bwrap(raw, os.pread(cpu_fd, 4096, 0))


def _interpret_bwrap(raw, cpu_report):
  """Maps bwrap's exit to the program's: bwrap exits 128+N when the program died of signal N."""
  run = _StepRun(**dataclasses.asdict(raw))
  code = raw.returncode
  if 128 < code < 128 + 65:
    run.returncode = -(code - 128)
  cpu = iso.parse_times(cpu_report.decode(errors="replace"))
  if cpu is not None:
    run.cpu_s = cpu
  # The wrapper reports CPU times once the program ran; bwrap's own failures (exit status 1, a
  # "bwrap: " message) come before that.
  run.setup_failed = (not cpu_report and code == 1 and raw.stderr.startswith(b"bwrap: ")
                      and not raw.timed_out)
  return run


def _with_modes(files):
  """{name: (bytes, mode)}: executables (built binaries) keep their execute bit."""
  out = {}
  for name, data in files.items():
    if isinstance(data, tuple):
      out[name] = data
    else:
      out[name] = (data, 0o644)
  return out


def _write_tree(root, files, uid):
  os.chmod(root, 0o700)
  for name, data in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)
  if uid is not None:
    for dirpath, dirnames, filenames in os.walk(root):
      for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
        os.chown(name, uid, uid)


def _read_tree(root):
  """{relative path: (bytes, mode)} of every regular file the build left in root."""
  out = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      path = os.path.join(dirpath, name)
      st = os.lstat(path)
      if not os.path.isfile(path) or os.path.islink(path):
        continue
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = (f.read(), 0o755 if st.st_mode & 0o111 else 0o644)
  return out
