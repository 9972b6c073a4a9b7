"""`moshi-desktop doctor`: can the model run on this machine? Checks everything, loads nothing.

Model: every file present; every tensor's name, shape and dtype against the architecture in the
config (safetensors headers only, seconds even for the 15 GB model); the tokenizer's vocabulary;
the parameter counts; the memory the model needs at the chosen dtype against what the device has.
Machine: Python, torch and its CUDA/MPS support, the GPU (or our CPU kernel, built here on first
use), PortAudio, and the audio devices with whether each takes Moshi's 24 kHz mono directly or
needs resampling.

Exit status 0 when the model can run here (warnings allowed), 1 when something stops it; every
problem found is named, one line each.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from model.catalog import CATALOG, DEFAULT_REPO
from model.config import SAMPLE_RATE
from model.files import FAIL, OK, WARN

from ..logs import log_path
from .arguments import add_lora_argument, add_model_arguments

_BIG_LM = 1_000_000_000  # parameters: a model this size is far from real time on a CPU
_TIGHT = 0.9  # needing more than this share of the available memory earns a warning


@dataclass
class Section:
    title: str
    checks: list[tuple[str, str]] = field(default_factory=list)  # (level, message)

    def add(self, level: str, message: str) -> None:
        self.checks.append((level, message))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the model's files and this machine, without loading the model",
        description=__doc__.split("\n\n")[0].removeprefix("`moshi-desktop doctor`: "),
    )
    add_model_arguments(parser)
    add_lora_argument(parser)
    for action in parser._actions:  # without --model: the model chosen in the window's settings
        if action.dest in ("model", "device", "dtype"):
            action.default = None
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    _from_settings(args)
    sections = [check_model(args), check_machine()]
    print(format_sections(sections))
    failures = sum(level == FAIL for s in sections for level, _ in s.checks)
    warnings = sum(level == WARN for s in sections for level, _ in s.checks)
    if failures:
        print(f"\n{failures} problem(s): the model cannot run here as it is.")
        return 1
    note = f" ({warnings} warning(s))" if warnings else ""
    print(f"\nThe model can run here{note}.")
    return 0


def _from_settings(args: argparse.Namespace) -> None:
    """Fill what the command line left out (--model, --revision, --device, --dtype) with what the
    window's settings say, or the defaults where there are none (no Qt to read them with)."""
    chosen = {}
    if None in (args.model, args.device, args.dtype):
        from ..gui import saved_model_choice

        chosen = saved_model_choice()
    if args.model is None:
        args.model = chosen.get("model", DEFAULT_REPO)
        args.revision = args.revision or chosen.get("revision")
        args.lora = args.lora or chosen.get("lora")
    args.device = args.device or chosen.get("device", "auto")
    args.dtype = args.dtype or chosen.get("dtype", "auto")


def format_sections(sections: list[Section]) -> str:
    lines: list[str] = []
    for section in sections:
        lines.append(section.title if not lines else f"\n{section.title}")
        for level, message in section.checks:
            first, *rest = message.splitlines() or [""]
            lines.append(f"  {level:<4}  {first}")
            lines.extend(f"          {line.strip()}" for line in rest)
    return "\n".join(lines)


# --- Model --------------------------------------------------------------------------------------


def model_files(args: argparse.Namespace):
    """--model (with --lora) as ModelFiles (a local folder, or a repository already in the
    Hugging Face cache; nothing is downloaded). Raises CheckpointError naming whatever is
    missing or does not fit."""
    from model.files import with_lora
    from model.hub import locate_model

    return with_lora(locate_model(args.model, download=False), args.lora)


def check_model(args: argparse.Namespace) -> Section:
    import torch

    from model.config import ConfigError
    from model.files import CheckpointError
    from model.inspect import inspect_model
    from model.pipeline import resolve_device, resolve_dtype, wants_int8

    section = Section(f"Model  {args.model}" + (f" + LoRA {args.lora}" if args.lora else ""))
    entry = CATALOG.get(args.model)
    if entry is not None:  # what it is and its licence, before the files
        section.add(OK, f"{entry.title}: {entry.facts}\n{entry.licence_notice}")
    try:
        files = model_files(args)
    except (CheckpointError, ConfigError) as e:
        section.add(FAIL, f"{e}\n(so the tensors were not checked)")
        files = None
    if files is not None:
        section.add(OK, f"files in {files.folder}: all present")
        report = inspect_model(files)
        for check in report.checks:
            section.add(check.level, check.message)

    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        section.add(FAIL, f"--device {args.device}: {e}")
        return section
    dtype = resolve_dtype(args.dtype, device)
    int8 = bool(wants_int8(args.dtype)) or bool(files and report.quantized)
    dtype_name = "int8 linears" if int8 else str(dtype).removeprefix("torch.")
    section.add(OK, f"runs on {device.type} with the LM in {dtype_name}, Mimi in float32")
    if files is None:
        return section

    if device.type == "cpu" and report.lm_parameters > _BIG_LM:
        section.add(
            WARN,
            "CPU only: a model this size runs about 20x slower than real time here; "
            "`talk` works with files, a live conversation needs a GPU",
        )
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        section.add(
            WARN, "this GPU has no native bfloat16: --dtype float16 is faster on older GPUs"
        )
    need = report.memory_needed(dtype, int8=int8)
    available, where = available_memory(device)
    if available is None:
        section.add(WARN, f"memory: needs about {need.describe()}; {where}")
    elif need.total > available:
        section.add(
            FAIL,
            f"memory: needs about {need.describe()}, but {where} has only {_gb(available)}"
            + _memory_hint(report, dtype, int8),
        )
    elif need.total > _TIGHT * available:
        section.add(
            WARN, f"memory: needs about {need.describe()}; {where} has {_gb(available)}: tight"
        )
    else:
        section.add(OK, f"memory: needs about {need.describe()}; {where} has {_gb(available)}")
    return section


def _memory_hint(report, dtype, int8: bool) -> str:
    import torch

    if not int8 and dtype == torch.float32:
        return "; --dtype bfloat16 halves the LM's share"
    if not int8 and report.lm_parameters > _BIG_LM:
        return "; --dtype int8 (or a q8 model) needs about half as much"
    return ""


def available_memory(device) -> tuple[int | None, str]:
    """Bytes free for the model on `device`, and the words to name where: a CUDA GPU's free
    memory; for the CPU, the RAM available now; for MPS (unified memory), the system's RAM."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return free, f"{torch.cuda.get_device_name(index)} (free memory)"
    if device.type == "mps":
        total = _total_ram()
        return total, "the system (unified memory)"
    available = _available_ram()
    if available is None:
        return None, "cannot tell how much RAM is available on this system"
    return available, "the system (available RAM)"


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform == "win32":
        return _windows_memory().ullAvailPhys
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _total_ram()


def _total_ram() -> int | None:
    if sys.platform == "win32":
        return _windows_memory().ullTotalPhys
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _windows_memory():
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("sullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))
    return status


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


# --- Machine ------------------------------------------------------------------------------------


def check_machine() -> Section:
    section = Section("Machine")
    section.add(
        OK, f"Python {platform.python_version()} on {platform.system()} {platform.machine()}"
    )
    section.add(OK, f"log file: {log_path()}")
    _check_torch(section)
    _check_audio(section)
    _check_window(section)
    return section


def _check_window(section: Section) -> None:
    """Whether Qt can open the window: its X11 plugin's libraries, then (with a display) a
    window opened and closed in a child process, since Qt aborts the process it fails in."""
    from ..gui import check_window, has_display
    from ..gui_check import advice, missing_libraries, probe_window, uses_xcb

    libraries = missing_libraries() if uses_xcb() else []
    if libraries:  # the window would abort; on a machine without a display, only one day
        section.add(FAIL if has_display() else WARN, advice(libraries))
    elif not has_display():
        section.add(OK, "window: Qt's libraries are here (no display to open it on now)")
    else:
        opened, said = probe_window(check_window)
        section.add(OK if opened else FAIL, f"window: {said}")


def _check_torch(section: Section) -> None:
    import torch

    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA in this build"
    section.add(
        OK,
        f"torch {torch.__version__} ({built}); CUDA GPU: {'yes' if cuda else 'no'}; "
        f"Apple MPS: {'yes' if mps else 'no'}",
    )
    if cuda:
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            major, minor = torch.cuda.get_device_capability(index)
            section.add(
                OK,
                f"GPU {index}: {torch.cuda.get_device_name(index)} (compute {major}.{minor}), "
                f"{_gb(free)} free of {_gb(total)}",
            )
    elif not mps:
        section.add(WARN, "no GPU: the model runs on the CPU")
    if not cuda:
        from model.cpu import native  # builds our CPU kernel the first time (seconds)

        kernel = native.status()
        failed = kernel.startswith("unavailable")  # else built, or not meant to be
        section.add(WARN if failed else OK, f"CPU kernel: {kernel}")
        from model.cpu.threads import ThreadPolicy

        kept = torch.get_num_threads()
        policy = ThreadPolicy()
        time.sleep(0.5)  # what the other programs take, over half a second
        policy.step_done(now=True)
        torch.set_num_threads(kept)
        section.add(OK, f"CPU threads: {policy.describe()}")
        from model.cpu.choice import table

        chosen = table()
        if chosen:
            section.add(
                OK,
                "CPU products, timed on this CPU (fastest kept):\n" + "\n".join(chosen),
            )


def import_sounddevice() -> Any:
    """sounddevice, which loads the PortAudio library as it is imported (OSError if it is not
    installed)."""
    import sounddevice

    return sounddevice


_NO_LIVE = "live conversation unavailable; `talk` works with files"


def _check_audio(section: Section) -> None:
    try:
        sd = import_sounddevice()
    except (ImportError, OSError) as e:
        section.add(
            WARN,
            f"PortAudio: cannot load the audio library ({e}): {_NO_LIVE}. Install PortAudio "
            "(Debian/Ubuntu: `sudo apt install libportaudio2`; it comes with sounddevice's "
            "wheels on Windows and macOS)",
        )
        return
    section.add(OK, f"PortAudio: {sd.get_portaudio_version()[1].split(',')[0]}")
    try:
        devices = list(sd.query_devices())
    except Exception as e:  # PortAudioError: the host audio system failed
        section.add(WARN, f"audio devices: cannot list them ({e}): {_NO_LIVE}")
        return
    default_in, default_out = _defaults(sd)
    inputs = [d for d in devices if d.get("max_input_channels", 0) > 0]
    outputs = [d for d in devices if d.get("max_output_channels", 0) > 0]
    if not inputs and not outputs:
        section.add(WARN, f"no audio devices: {_NO_LIVE}")
        return
    for kind, found, default, check in (
        ("input", inputs, default_in, sd.check_input_settings),
        ("output", outputs, default_out, sd.check_output_settings),
    ):
        if not found:
            what = "microphone" if kind == "input" else "speaker or headphones"
            section.add(WARN, f"no audio {kind} device (no {what}): {_NO_LIVE}")
        for device in found:
            section.add(OK, _describe_device(kind, device, default, check))


def _defaults(sd: Any) -> tuple[int, int]:
    try:
        default_in, default_out = sd.default.device
        return int(default_in), int(default_out)
    except (TypeError, ValueError):
        return -1, -1


def _describe_device(kind: str, device: dict, default: int, check) -> str:
    index = device.get("index", -1)
    mark = " (default)" if index == default else ""
    name = f"{kind} {index}: {device.get('name', '?')}{mark}"
    try:
        check(device=index, samplerate=SAMPLE_RATE, channels=1)
    except Exception:  # PortAudioError or ValueError: this rate or channel count is not taken
        rate = device.get("default_samplerate")
        native = f"{rate / 1000:g} kHz" if rate else "its own rate"
        return f"{name}: resampled from {native} (24 kHz mono not supported)"
    return f"{name}: 24 kHz mono directly"
