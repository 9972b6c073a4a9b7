"""Record what NVIDIA's PersonaPlex fork does on a tiny random PersonaPlex, for test_persona.py.

CI cannot reach GitHub, so the fork's tokens are recorded here and kept beside this script:
tokens.json, the two voice recordings (voice_a.wav, voice_b.wav) and voice_b.json (the
tensors of voice_b.pt, what the fork saves for voice_b.wav: embeddings and token cache; kept as
JSON, never as a pickle). The weights are not kept: both sides rebuild them with `model.tiny.write_tiny_personaplex(folder, seed=0)` (NVIDIA's layout: fused attention,
all 16 depth slices, float32), which the fork loads with its own loader (`loaders.get_moshi_lm`
and `get_mimi`, their hard-coded sizes swapped for the tiny ones).

Recorded, greedy, fp32, on the CPU, as the fork's offline.py runs it (warm-up, reset, the prompt
schedule, then the live frames; the user's frames are given as codes):
- "wav": voice_a.wav as the voice prompt, with the persona;
- "pt": voice_b.pt as the voice prompt, with the persona.
For each: every step's picks through the whole schedule (the text token and the 16 depth-
transformer codebooks the model chose, before teacher forcing replaces any: the fork's
`sample_token` calls, 17 a step), and each live frame's output (the 17 tokens `LMGen.step`
returns). The script checks that every stage carries information (each codebook's codes vary,
the voice's Mimi codes vary) and that no greedy pick is a near tie.

To regenerate (network once; nothing goes into the project's environment):

    git clone https://github.com/NVIDIA/personaplex /tmp/personaplex   # or `fetch` it
    mkdir -p /tmp/pp && git -C /tmp/personaplex archive HEAD moshi | tar -x -C /tmp/pp
    .venv/bin/pip install --no-deps --target /tmp/pp_deps pyloudnorm scipy
    PYTHONPATH=/tmp/pp/moshi:/tmp/pp_deps:. .venv/bin/python tests/model/data/personaplex/record.py

(/tmp/pp/moshi comes first so that `import moshi` is the fork, not Kyutai's package.)
Recorded with NVIDIA/personaplex at 3428dfd (moshi/moshi/models/lm.py, loaders.py, offline.py).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
PERSONA = (
    "You are a wise and friendly teacher. Answer questions or provide advice in a clear and "
    "engaging way."
)
SEED = 1  # of the weights (a seed whose greedy picks have no near tie)
LIVE_FRAMES = 12
NEAR_TIE = 1e-3  # the smallest gap allowed between a greedy pick's logit and the runner-up's


def write_voice(path: Path, seconds: float, pitch: float, seed: int) -> None:
    """A voice-like recording: a gliding harmonic tone with a syllable envelope and some noise,
    mono 16-bit at 24 kHz."""
    rate = 24000
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    f0 = pitch * (1 + 0.2 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    pcm = 0.2 * tone * envelope + 0.02 * rng.standard_normal(len(t))
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


def main() -> None:
    import moshi

    assert "/tmp/pp" in moshi.__file__ or "personaplex" in moshi.__file__, (
        f"`import moshi` found {moshi.__file__}, not NVIDIA's fork: see the docstring"
    )
    import sentencepiece
    from moshi.models import lm as fork_lm
    from moshi.models import loaders

    from model.config import MIMI_NAME, MOSHI_NAME, TOKENIZER_NAME
    from model.tiny import TINY_PERSONAPLEX_LM, TINY_PERSONAPLEX_MIMI, write_tiny_personaplex

    torch.set_num_threads(1)
    write_voice(HERE / "voice_a.wav", 1.2, 140.0, seed=1)
    write_voice(HERE / "voice_b.wav", 0.9, 210.0, seed=2)
    work = Path(tempfile.mkdtemp())
    folder = write_tiny_personaplex(work / "model", seed=SEED)
    config = json.loads((folder / "config.json").read_text())

    # The fork hard-codes Moshi 7B's and Mimi's sizes: swap in the tiny ones.
    loaders._lm_kwargs.clear()
    loaders._lm_kwargs.update(
        {k: v for k, v in TINY_PERSONAPLEX_LM.items()}, text_card=config["text_card"], dep_q=8
    )
    loaders._seanet_kwargs.update(TINY_PERSONAPLEX_MIMI["seanet"])
    loaders._quantizer_kwargs.update(TINY_PERSONAPLEX_MIMI["quantizer"])
    loaders._transformer_kwargs.update(TINY_PERSONAPLEX_MIMI["transformer"])

    lm = loaders.get_moshi_lm(folder / MOSHI_NAME, device="cpu", dtype=torch.float32)
    assert not any(p.is_meta for p in lm.parameters()), "the fork left weights unloaded"
    assert lm.dep_q == 16
    mimi = loaders.get_mimi(folder / MIMI_NAME, device="cpu")
    tokenizer = sentencepiece.SentencePieceProcessor(str(folder / TOKENIZER_NAME))
    from moshi.offline import wrap_with_system_tags

    persona_tokens = tokenizer.encode(wrap_with_system_tags(PERSONA))
    g = torch.Generator().manual_seed(3)
    user_codes = torch.randint(0, 2048, (LIVE_FRAMES, 8), generator=g)

    # Every greedy pick, and how far it stands from the runner-up.
    picks: list[int] = []
    margins: list[float] = []
    original_sample = fork_lm.sample_token

    def recording_sample(logits, use_sampling=False, temp=1.0, top_k=0, top_p=0.0):
        assert not use_sampling
        top = logits.float().topk(2, dim=-1).values
        margins.append(float((top[..., 0] - top[..., 1]).min()))
        token = original_sample(logits, use_sampling, temp, top_k, top_p)
        picks.append(int(token.flatten()[0]))
        return token

    fork_lm.sample_token = recording_sample

    voice_codes: list[list[int]] = []
    original_encode = fork_lm.encode_from_sphn

    def recording_encode(mimi, samples, max_batch=1):
        for codes in original_encode(mimi, samples, max_batch):
            voice_codes.append(codes[0, :, 0].tolist())
            yield codes

    fork_lm.encode_from_sphn = recording_encode

    def run(voice: Path, save: bool) -> dict:
        lm_gen = fork_lm.LMGen(
            lm,
            audio_silence_frame_cnt=int(0.5 * mimi.frame_rate),
            sample_rate=mimi.sample_rate,
            device="cpu",
            frame_rate=mimi.frame_rate,
            save_voice_prompt_embeddings=save,
            use_sampling=False,
        )
        mimi.streaming_forever(1)
        lm_gen.streaming_forever(1)
        for _ in range(4):  # offline.py's warm-up, on zero codes
            lm_gen.step(torch.zeros(1, 8, 1, dtype=torch.long))
        if voice.suffix == ".pt":
            lm_gen.load_voice_prompt_embeddings(str(voice))
        else:
            lm_gen.load_voice_prompt(str(voice))
        lm_gen.text_prompt_tokens = persona_tokens
        mimi.reset_streaming()
        lm_gen.reset_streaming()
        picks.clear()
        margins.clear()
        lm_gen.step_system_prompts(mimi)
        mimi.reset_streaming()
        prompt_picks = list(picks)
        outputs = []
        for frame in user_codes:
            out = lm_gen.step(frame.view(1, 8, 1))
            outputs.append(out[0, :, 0].tolist())
        assert len(picks) % 17 == 0 and len(prompt_picks) % 17 == 0
        worst = int(np.argmin(margins))
        assert min(margins) > NEAR_TIE, (
            f"a greedy pick is a near tie ({min(margins)}: pick {worst % 17} of step {worst // 17})"
        )
        return {
            "voice": voice.name,
            "prompt_picks": [prompt_picks[i : i + 17] for i in range(0, len(prompt_picks), 17)],
            "live_picks": [picks[i : i + 17] for i in range(len(prompt_picks), len(picks), 17)],
            "live_out": outputs,
            "min_margin": min(margins),
        }

    # voice_b.pt: what the fork saves for voice_b.wav (beside it, as voice_b.pt).
    shutil.copy(HERE / "voice_b.wav", work / "voice_b.wav")
    run(work / "voice_b.wav", save=True)
    # Kept as JSON (exact: float32 values round-trip through JSON's doubles), not as a pickle:
    # tests/conftest.py's fork_voice_pt writes it back as the fork's .pt with torch.save.
    fork_pt = torch.load(work / "voice_b.pt", weights_only=True)
    entries = {
        key: {
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "values": t.flatten().tolist(),
        }
        for key, t in fork_pt.items()
    }
    (HERE / "voice_b.json").write_text(json.dumps(entries) + "\n")
    voice_codes.clear()
    recorded = {
        "seed": SEED,
        "persona": PERSONA,
        "persona_tokens": persona_tokens,
        "user_codes": user_codes.tolist(),
        "wav": run(HERE / "voice_a.wav", save=False),
    }
    recorded["wav"]["voice_codes"] = list(voice_codes)
    recorded["pt"] = run(work / "voice_b.pt", save=False)

    # Every stage carries information.
    codes = np.array(recorded["wav"]["voice_codes"])
    assert all(len(set(codes[:, k])) > 1 for k in range(8)), "the voice's codes do not vary"
    for name in ("wav", "pt"):
        live = np.array(recorded[name]["live_picks"])
        assert all(len(set(live[:, k])) > 1 for k in range(17)), f"{name}: a stream is constant"
    assert recorded["wav"]["live_out"] != recorded["pt"]["live_out"]
    (HERE / "tokens.json").write_text(json.dumps(recorded) + "\n")
    (HERE / "voice_b.wav").unlink()  # its .pt's tensors are what the test uses
    shutil.rmtree(work)
    print("recorded", {k: len(recorded[k]["prompt_picks"]) for k in ("wav", "pt")}, "prompt steps")


if __name__ == "__main__":
    main()
