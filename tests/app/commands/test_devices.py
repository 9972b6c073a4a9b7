"""`moshi-desktop devices` and `app.audio.devices.list_devices`, with a fake sounddevice in place of
PortAudio (no sound card is needed)."""

from __future__ import annotations

import argparse
import builtins
import types

import pytest

from app import cli
from app.audio import devices as audio
from app.audio.devices import AudioError, DeviceInfo, PortAudioMissing, list_devices
from app.commands import devices


class PortAudioError(Exception):
    pass


def fake_sounddevice(found: list[dict], rates: dict[int, set[int]], default=(0, 1), out_rates=None):
    """Device i accepts mono at the rates in rates[i] (for output: out_rates[i] if given)."""

    def checker(rates):
        def check(device, samplerate, channels, dtype):
            if samplerate not in rates.get(device, set()):
                raise PortAudioError("Invalid sample rate [PaErrorCode -9997]")

        return check

    return types.SimpleNamespace(
        PortAudioError=PortAudioError,
        query_devices=lambda: [dict(d) for d in found],
        query_hostapis=lambda: ({"name": "ALSA"}, {"name": "JACK Audio Connection Kit"}),
        check_input_settings=checker(rates),
        check_output_settings=checker(rates if out_rates is None else out_rates),
        default=types.SimpleNamespace(device=list(default), hostapi=0),
    )


def dev(name, ins, outs, rate, hostapi=0):
    return {
        "name": name,
        "hostapi": hostapi,
        "max_input_channels": ins,
        "max_output_channels": outs,
        "default_samplerate": rate,
    }


LAPTOP = [
    dev("HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 2, 48000.0),
    dev("HDA Intel PCH: HDMI 0 (hw:0,3)", 0, 8, 44100.0),
    dev("USB Headset: Audio (hw:1,0)", 1, 0, 16000.0, hostapi=1),
    dev("default", 32, 32, 44100.0),
]
RATES = {0: {48000}, 1: {24000, 44100}, 2: {16000}, 3: {24000, 44100, 48000}}


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch):
    def install(sd) -> None:
        monkeypatch.setattr(audio, "_sounddevice", lambda: sd)

    return install


def run_devices(capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="moshi-desktop")
    devices.register(parser.add_subparsers())
    args = parser.parse_args(["devices"])
    status = args.handler(args)
    return status, capsys.readouterr().out


def test_list_devices(use):
    use(fake_sounddevice(LAPTOP, RATES, default=(3, 1)))
    infos = list_devices()
    assert [d.index for d in infos] == [0, 1, 2, 3]
    assert infos[0] == DeviceInfo(
        index=0,
        name="HDA Intel PCH: ALC3246 Analog (hw:0,0)",
        hostapi="ALSA",
        input_channels=2,
        output_channels=2,
        default_samplerate=48000.0,
        input_24k=False,
        output_24k=False,
    )
    assert (infos[1].input_24k, infos[1].output_24k, infos[1].default_output) == (None, True, True)
    assert infos[2].hostapi == "JACK Audio Connection Kit" and infos[2].output_24k is None
    assert infos[3].default_input and not infos[3].default_output and infos[3].input_24k


def test_devices_prints_a_table(use, capsys):
    use(fake_sounddevice(LAPTOP, RATES, default=(3, 1)))
    status, out = run_devices(capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == "# device host API in out rate 24 kHz mono default".split()
    rows = {line.split()[0]: line for line in lines[1:5]}
    assert "48 kHz" in rows["0"] and rows["0"].rstrip().endswith("resampled")
    assert "44.1 kHz" in rows["1"] and "direct" in rows["1"] and rows["1"].endswith("output")
    assert "16 kHz" in rows["2"] and "JACK Audio Connection Kit" in rows["2"]
    assert rows["3"].split()[-2:] == ["direct", "input"]
    # The columns line up: every row's rate starts where the header's does.
    column = lines[0].index("rate")
    assert all(row[column:].split()[0] in {"48", "44.1", "16"} for row in rows.values())
    assert "part of its name" in out


def test_a_device_that_takes_24k_one_way_only(use, capsys):
    use(fake_sounddevice([dev("Odd", 1, 1, 48000.0)], {0: {24000}}, out_rates={0: {48000}}))
    status, out = run_devices(capsys)
    assert status == 0 and "in direct, out resampled" in out


def test_no_devices_is_an_answer_not_a_failure(use, capsys):
    use(fake_sounddevice([], {}, default=(-1, -1)))
    status, out = run_devices(capsys)
    assert status == 0 and out.startswith("no audio devices found")


def test_missing_portaudio_exits_1_with_what_to_install(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    if devices.register not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, devices.register))
    assert cli.main(["devices"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("moshi-desktop: error: cannot load the PortAudio audio library")
    assert "libportaudio2" in captured.err and "talk" in captured.err
    with pytest.raises(PortAudioMissing):
        list_devices()


def test_a_failing_audio_system_is_reported(use):
    sd = fake_sounddevice(LAPTOP, RATES)

    def broken():
        raise PortAudioError("Error querying device -1")

    sd.query_devices = broken
    use(sd)
    with pytest.raises(AudioError, match="cannot list the audio devices"):
        list_devices()


def test_the_real_portaudio_if_present(capsys):
    """Whatever this machine has (often nothing, on a build server): a table or the message."""
    try:
        audio._sounddevice()
    except PortAudioMissing:
        pytest.skip("PortAudio is not installed here")
    status, out = run_devices(capsys)
    assert status == 0
    assert out.startswith("no audio devices found") or out.startswith("#  device")
