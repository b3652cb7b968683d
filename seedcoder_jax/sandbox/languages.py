"""Per-language build and run commands (Python, C++, Java, JavaScript) and their limits.

memory_mb means the address space (RLIMIT_AS) for Python and C++. The JVM and V8 reserve far more
virtual memory than they touch, so for Java and JavaScript memory_mb is the heap limit (-Xmx,
--max-old-space-size) and RLIMIT_AS gets a fixed allowance on top for the runtime itself.

memory_mb is also the run's total budget (budget.py: all its processes together). The JVM and V8
keep memory resident beyond their heap limit (JIT code, metaspace or new space, GC structures,
thread stacks), so their budget gets a resident allowance on top (Plan.resident_allowance_bytes),
far smaller than the virtual one.
"""

import dataclasses
import os
import re
import shutil
import stat
import sys

_MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Plan:
  """How one program is built and run inside the sandbox (paths relative to its workdir).

  Attributes:
    files: {name: bytes} written into the workdir (the program first).
    compile_argv: the build command, or None for interpreted languages.
    run_argv: the command that runs the program.
    address_space_bytes: RLIMIT_AS of the run step.
    min_procs: floor on the process/thread limit (runtimes with many threads).
    dirs: host directories the commands need besides /usr (bound read-only at the same path).
    resident_allowance_bytes: memory the runtime keeps resident beyond memory_mb, added to the
      run's total budget.
  """
  files: dict
  compile_argv: list | None
  run_argv: list
  address_space_bytes: int
  min_procs: int = 0
  dirs: tuple = ()
  resident_allowance_bytes: int = 0


# Build steps are trusted tools on untrusted input: they get their own, larger allowance.
COMPILE_ADDRESS_SPACE_BYTES = 4096 * _MB
COMPILE_MIN_PROCS = 256
# The build's total budget (g++'s driver, cc1plus, as and ld together; javac's JVM): one process
# may use all of it, as before budgets.
COMPILE_MEMORY_BYTES = 4096 * _MB
_JVM_ALLOWANCE_MB = 1536
_V8_ALLOWANCE_MB = 1024
# Resident beyond the heap limit. JVM: its code cache and compressed class space (64 MB each, the
# flags above) plus metaspace, thread stacks and GC tables; V8: new space (up to 3 x 16 MB
# semi-spaces), code space and the isolate. A heap-filling program measured ~10 MB past its heap
# (docs/decisions.md): the rest is margin for larger programs.
_JVM_RESIDENT_MB = 256
_V8_RESIDENT_MB = 256
_JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:CompressedClassSpaceSize=64m",
              "-XX:ReservedCodeCacheSize=64m", "-Xss8m"]

LANGUAGES = ("python", "cpp", "java", "javascript")
_ALIASES = {"py": "python", "python3": "python", "c++": "cpp", "js": "javascript",
            "node": "javascript"}


def canonical(language):
  """The language's canonical name; ValueError naming the known ones if it has none."""
  name = _ALIASES.get(language.lower(), language.lower())
  if name not in LANGUAGES:
    raise ValueError(f"unknown sandbox language {language!r}: expected one of {LANGUAGES} "
                     f"(or aliases {sorted(_ALIASES)})")
  return name


def world_reachable(path):
  """Whether a process with no special rights can reach and run path (every parent o+x)."""
  path = os.path.realpath(path)
  parts = path.split("/")
  for i in range(2, len(parts) + 1):
    try:
      mode = os.stat("/".join(parts[:i]) or "/").st_mode
    except OSError:
      return False
    if not mode & stat.S_IXOTH:
      return False
  return True


def python_interpreter():
  """(interpreter path, host dirs to bind) for Python programs.

  Programs run as an unprivileged uid that must reach the interpreter on the host file system
  (bwrap binds paths as that uid too), so a pyenv under a private /root does not qualify: the
  project's own base interpreter where reachable, else the system python3.
  SEEDCODER_SANDBOX_PYTHON overrides the choice.
  """
  base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
  candidates = [os.environ.get("SEEDCODER_SANDBOX_PYTHON", ""), base, "/usr/bin/python3",
                shutil.which("python3") or ""]
  for candidate in candidates:
    if candidate and os.path.exists(candidate) and (os.geteuid() != 0 or
                                                     world_reachable(candidate)):
      path = os.path.realpath(candidate)
      prefix = os.path.dirname(os.path.dirname(path))  # <prefix>/bin/python
      return path, (() if path.startswith("/usr/") else (prefix,))
  raise RuntimeError(f"no Python interpreter an unprivileged sandbox uid can run among "
                     f"{[c for c in candidates if c]}; set SEEDCODER_SANDBOX_PYTHON")


def toolchain_missing(language):
  """The binaries a language needs that this machine lacks (empty when it can run)."""
  need = {"python": (), "cpp": ("g++",), "java": ("javac", "java"),
          "javascript": ("node",)}[canonical(language)]
  return [b for b in need if shutil.which(b) is None]


def java_main_class(source):
  """The class javac must find in File.java: the public one, else the one declaring main."""
  public = re.search(r"\bpublic\s+(?:final\s+|abstract\s+)*class\s+(\w+)", source)
  if public:
    return public.group(1)
  main = re.search(r"\bstatic\s+void\s+main\s*\(", source)
  classes = [m for m in re.finditer(r"\bclass\s+(\w+)", source)
             if main is None or m.start() < main.start()]
  return classes[-1].group(1) if classes else "Main"


def plan(language, source, *, memory_mb, argv=(), extra_files=()):
  """The Plan for running source in language with memory_mb of memory.

  Args:
    extra_files: names of the files placed beside the program; for Java, every *.jar among them
      joins the class path (e.g. org.javatuples for MultiPL-E).
  """
  language = canonical(language)
  data = source.encode()
  argv = list(argv)
  if language == "python":
    python, dirs = python_interpreter()
    # -E -s: no PYTHON* variables or user site; the script's directory stays importable.
    return Plan({"main.py": data}, None, [python, "-E", "-s", "-B", "main.py"] + argv,
                memory_mb * _MB, dirs=dirs)
  if language == "cpp":
    return Plan({"main.cpp": data}, ["g++", "-std=c++17", "-O2", "-o", "main", "main.cpp"],
                ["./main"] + argv, memory_mb * _MB)
  if language == "java":
    cls = java_main_class(source)
    classpath = ":".join(["."] + sorted(n for n in extra_files if n.endswith(".jar")))
    return Plan({f"{cls}.java": data},
                ["javac", "-J-Xmx512m"] + [f"-J{f}" for f in _JVM_FLAGS] +
                ["-encoding", "UTF-8", "-cp", classpath, "-d", ".", f"{cls}.java"],
                ["java", f"-Xmx{memory_mb}m", "-ea"] + _JVM_FLAGS + ["-cp", classpath, cls] + argv,
                (memory_mb + _JVM_ALLOWANCE_MB) * _MB, min_procs=256,
                resident_allowance_bytes=_JVM_RESIDENT_MB * _MB)
  return Plan({"main.js": data}, None,
              ["node", f"--max-old-space-size={memory_mb}", "main.js"] + argv,
              (memory_mb + _V8_ALLOWANCE_MB) * _MB, min_procs=64,
              resident_allowance_bytes=_V8_RESIDENT_MB * _MB)


# stderr markers of a program that ran out of memory under RLIMIT_AS (it fails an allocation
# rather than being OOM-killed, and each runtime words that its own way).
MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"java.lang.OutOfMemoryError",
                  b"JavaScript heap out of memory", b"Fatal process out of memory",
                  b"Cannot allocate memory", b"failed to map segment")
