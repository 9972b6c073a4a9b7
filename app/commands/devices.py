"""`moshi-desktop devices`: list the microphones and speakers PortAudio sees.

One row per device: its number and name (either picks it, e.g. `--input-device 3` or
`--input-device usb`), host API, input and output channels, native rate, whether it takes
Moshi's 24 kHz mono directly (the app opens every device at its native rate and resamples
anyway), and which devices are the system's defaults.

Exit status 1 when the PortAudio library is missing (nothing can be listed: something to fix);
0 with "no audio devices found" when PortAudio works but sees no device, which is an answer
(a machine without a sound card, a container), not a failure of the command.
"""

from __future__ import annotations

import argparse

from ..audio.devices import DeviceInfo, list_devices


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list the audio devices (microphones, speakers) and how each is used",
        description=__doc__.split("\n\n")[0].removeprefix("`moshi-desktop devices`: "),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    devices = list_devices()  # PortAudioMissing / AudioError: reported by the CLI, exit 1
    if not devices:
        print(
            "no audio devices found: connect a microphone and speakers (or headphones) to talk "
            "live; file-based use (`moshi-desktop talk`) works without them"
        )
        return 0
    print(format_devices(devices))
    return 0


def _rate(hz: float) -> str:
    return f"{hz / 1000:g} kHz"


def _direct(info: DeviceInfo) -> str:
    sides = [(side, ok) for side, ok in (("in", info.input_24k), ("out", info.output_24k))]
    sides = [(side, ok) for side, ok in sides if ok is not None]
    word = {True: "direct", False: "resampled"}
    if len({ok for _, ok in sides}) == 1:
        return word[sides[0][1]]
    return ", ".join(f"{side} {word[ok]}" for side, ok in sides)


def _defaults(info: DeviceInfo) -> str:
    marks = [m for m, on in (("input", info.default_input), ("output", info.default_output)) if on]
    return " and ".join(marks)


def format_devices(devices: list[DeviceInfo]) -> str:
    """A table, one row per device, and a line on how to choose one."""
    header = ("#", "device", "host API", "in", "out", "rate", "24 kHz mono", "default")
    rows = [
        (
            str(d.index),
            d.name,
            d.hostapi,
            str(d.input_channels),
            str(d.output_channels),
            _rate(d.default_samplerate),
            _direct(d),
            _defaults(d),
        )
        for d in devices
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {0, 3, 4}  # numbers line up on the right

    def line(row: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    table = [line(header), *(line(row) for row in rows)]
    table.append(
        "\nChoose a device by its number or by part of its name. Each device is opened at its own"
        "\nrate; Moshi's 24 kHz audio is resampled to and from it."
    )
    return "\n".join(table)
