"""model/persona.py against NVIDIA's PersonaPlex fork, token for token.

The fork cannot be installed in CI (it is on GitHub only), so data/personaplex/record.py ran it
once and kept what it did in data/personaplex/tokens.json (its docstring says how to regenerate).
Both sides hold the same tiny random PersonaPlex, rebuilt here by `write_tiny_personaplex` in
NVIDIA's layout and loaded through the app's own loading code: greedy, fp32, CPU, through the
prompt schedule (a .wav voice, or a .pt voice that the fork saved, then the persona) and the live
frames. Each step's 17 picks (text, then the 16 depth-transformer codebooks, Moshi's and the
user's) and each live frame's 17 output tokens must be the fork's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sentencepiece
import torch

from model.checkpoint import load_lm, load_mimi
from model.files import CheckpointError, resolve_folder
from model.generate import SamplingSettings
from model.persona import (
    PersonaGenerator,
    VoicePrompt,
    integrated_loudness,
    persona_tokens,
    read_wav,
)
from model.streaming import streaming
from model.text import open_tokenizer
from model.tiny import write_tiny_personaplex

DATA = Path(__file__).parent / "data" / "personaplex"
RECORDED = json.loads((DATA / "tokens.json").read_text())

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def persona_model(tmp_path_factory: pytest.TempPathFactory):
    folder = write_tiny_personaplex(tmp_path_factory.mktemp("pp"), seed=RECORDED["seed"])
    files = resolve_folder(folder)
    lm = load_lm(files, dtype=torch.float32)
    mimi = load_mimi(files)
    tokenizer = sentencepiece.SentencePieceProcessor(str(files.tokenizer))
    return files, lm, mimi, tokenizer


def run(lm, mimi, voice: VoicePrompt, tokens: list[int]):
    generator = PersonaGenerator(lm, SamplingSettings(greedy=True))
    picks: list[list[int]] = []
    step = generator._finish

    def recording_finish(*args):
        out = step(*args)
        picks.append(generator.last_picks[0].tolist())
        return out

    generator._finish = recording_finish
    user = torch.tensor(RECORDED["user_codes"])
    with streaming(generator, 1):
        kept = generator.prompt(voice, tokens, mimi)
        prompt_picks = list(picks)
        picks.clear()
        outputs = [generator.step(frame[None])[0].tolist() for frame in user]
    return prompt_picks, picks, outputs, kept


def test_a_personaplex_folder_loads_with_sixteen_depth_codebooks(persona_model):
    files, lm, _, tokenizer = persona_model
    assert files.config.model_type == "personaplex"
    assert lm.cfg.dep_q == 16 and len(lm.linears) == 16
    assert persona_tokens(tokenizer, RECORDED["persona"]) == RECORDED["persona_tokens"]


def test_a_pt_voice_and_a_persona_give_the_forks_tokens(persona_model, fork_voice_pt):
    _, lm, mimi, tokenizer = persona_model
    recorded = RECORDED["pt"]
    voice = VoicePrompt.load(fork_voice_pt, lm.cfg)
    prompt, live, outputs, _ = run(lm, mimi, voice, RECORDED["persona_tokens"])
    assert prompt == recorded["prompt_picks"]
    assert live == recorded["live_picks"]
    assert outputs == recorded["live_out"]


@pytest.mark.slow
def test_a_wav_voice_and_a_persona_give_the_forks_tokens(persona_model):
    _, lm, mimi, _ = persona_model
    recorded = RECORDED["wav"]
    voice = VoicePrompt.load(DATA / recorded["voice"], lm.cfg)
    prompt, live, outputs, kept = run(lm, mimi, voice, RECORDED["persona_tokens"])
    assert prompt == recorded["prompt_picks"]
    assert live == recorded["live_picks"]
    assert outputs == recorded["live_out"]
    # what a .pt of this voice holds: one input embedding per step but the first, and the cache
    frames = len(recorded["voice_codes"])
    assert kept.embeddings.shape == (frames - 1, 1, 1, lm.cfg.dim)
    again = VoicePrompt.from_state(kept.state(), lm.cfg)
    prompt_again, _, outputs_again, _ = run(lm, mimi, again, RECORDED["persona_tokens"])
    assert outputs_again == outputs


def test_every_stage_of_the_recording_carries_information():
    for name in ("wav", "pt"):
        live = RECORDED[name]["live_picks"]
        for k in range(17):
            assert len({step[k] for step in live}) > 1, (name, k)
        assert RECORDED[name]["min_margin"] > 1e-3
    codes = RECORDED["wav"]["voice_codes"]
    assert all(len({frame[k] for frame in codes}) > 1 for k in range(8))
    assert RECORDED["wav"]["live_out"] != RECORDED["pt"]["live_out"]


def test_the_voice_loudness_follows_pyloudnorm():
    pcm = read_wav(DATA / "voice_a.wav")
    pyloudnorm = pytest.importorskip("pyloudnorm")
    assert integrated_loudness(pcm) == pyloudnorm.Meter(24000).integrated_loudness(pcm)


def test_a_pt_voice_is_loaded_as_tensors_only_and_its_shapes_checked(
    tmp_path, persona_model, fork_voice_pt
):
    _, lm, _, _ = persona_model
    good = torch.load(fork_voice_pt, weights_only=True)
    bad = tmp_path / "bad.pt"
    torch.save({"embeddings": good["embeddings"][..., :3], "cache": good["cache"]}, bad)
    with pytest.raises(CheckpointError, match="embeddings of shape"):
        VoicePrompt.load(bad, lm.cfg)
    torch.save({"embeddings": good["embeddings"], "cache": good["cache"][:, :9]}, bad)
    with pytest.raises(CheckpointError, match="token cache of shape"):
        VoicePrompt.load(bad, lm.cfg)

    class Code:  # a pickle that would run code: refused by weights_only
        def __reduce__(self):
            return (print, ("unpickled",))

    torch.save({"embeddings": Code(), "cache": good["cache"]}, bad)
    with pytest.raises(CheckpointError, match="not a voice prompt"):
        VoicePrompt.load(bad, lm.cfg)


def test_missing_depth_slices_are_filled_from_the_first_eight_as_the_fork_does(tmp_path):
    """A checkpoint with a depth transformer for 8 codebooks (attention stacked for 8 steps, no
    slices 8..15 of gating, linears, depformer_in, depformer_emb) loads as PersonaPlex with
    those slices read from 0..7 (NVIDIA's `get_moshi_lm`, copy_missing_weights)."""
    from safetensors.torch import load_file, save_file

    folder = write_tiny_personaplex(tmp_path / "full", seed=RECORDED["seed"])
    full = load_file(str(folder / "model.safetensors"))
    sliced = re.compile(r"(?:^|\.)(?:gating|linears|depformer_in|depformer_emb)\.(\d+)\.")
    cut = {}
    for key, value in full.items():
        m = sliced.search(key)
        if m and int(m[1]) >= 8 and key != "depformer_emb.7.weight":
            continue  # depformer_emb.7 stays: the fork has no rule for it
        if key.startswith("depformer.") and "self_attn" in key:
            value = value[: value.shape[0] // 2]  # stacked for steps 0..7
        cut[key] = value
    save_file(cut, str(folder / "model.safetensors"))
    lm = load_lm(resolve_folder(folder), dtype=torch.float32)
    state = lm.state_dict()
    for step in range(8, 16):
        assert torch.equal(state[f"linears.{step}.weight"], full[f"linears.{step - 8}.weight"])
        assert torch.equal(
            state[f"depformer.layers.1.gating.{step}.linear_in.weight"],
            full[f"depformer.layers.1.gating.{step - 8}.linear_in.weight"],
        )
        assert torch.equal(
            state[f"depformer.layers.0.self_attn.in_projs.{step}.weight"],
            state[f"depformer.layers.0.self_attn.in_projs.{step - 8}.weight"],
        )
    assert torch.equal(state["depformer_emb.8.weight"], full["depformer_emb.0.weight"])


def test_a_conversation_pipeline_runs_the_prompt_then_the_forks_live_step(
    persona_model, fork_voice_pt
):
    """The app's seam: the voice and persona before the first frame, then one step per frame
    (Mimi encodes the user's audio), Moshi's 8 codes decoded; a reset runs the prompt again
    from the voice's kept state, to the same conversation."""
    import numpy as np

    from model.pipeline import Pipeline

    files, lm, mimi, tokenizer = persona_model
    pipeline = Pipeline(mimi, lm, open_tokenizer(files.tokenizer), files=files, seed=0)
    pipeline.sampling = SamplingSettings(greedy=True)
    voice = VoicePrompt.load(fork_voice_pt, lm.cfg)
    pipeline.set_persona(voice, RECORDED["persona"])
    frames = [np.sin(np.arange(1920) * (0.01 + 0.003 * i)).astype(np.float32) for i in range(4)]
    first = [pipeline.step(frame) for frame in frames]
    assert all(r.pcm is not None and r.pcm.shape == (1920,) for r in first)
    assert all(len(r.audio_tokens) == 8 for r in first)
    pipeline.reset()
    again = [pipeline.step(frame) for frame in frames]
    assert [r.audio_tokens for r in again] == [r.audio_tokens for r in first]
    pipeline.close()


def test_the_state_after_the_prompt_is_kept_and_gives_the_same_conversation(
    persona_model, fork_voice_pt
):
    """A second conversation with the same voice and persona starts from the state the first
    prompt left (no prompt step runs), and is the same conversation, seeded sampling included;
    another persona runs its prompt."""
    import numpy as np

    from model.pipeline import Pipeline

    files, lm, mimi, tokenizer = persona_model
    pipeline = Pipeline(mimi, lm, open_tokenizer(files.tokenizer), files=files, seed=5)
    voice = VoicePrompt.load(fork_voice_pt, lm.cfg)
    pipeline.set_persona(voice, RECORDED["persona"])
    frames = [np.sin(np.arange(1920) * (0.01 + 0.003 * i)).astype(np.float32) for i in range(4)]
    first = [pipeline.step(frame).audio_tokens for frame in frames]
    generator = pipeline.generator
    prompt_steps = []
    step = generator._finish
    generator._finish = lambda *a: prompt_steps.append(1) or step(*a)
    pipeline.reset(seed=5)
    pipeline._prompt()
    assert prompt_steps == []  # restored, not run
    pipeline._prompted = False
    pipeline.reset(seed=5)
    again = [pipeline.step(frame).audio_tokens for frame in frames]
    assert again == first
    assert len(prompt_steps) == len(frames)  # the live frames only
    pipeline.set_persona(voice, "You are a pirate.")
    pipeline.reset(seed=5)
    prompt_steps.clear()
    other = [pipeline.step(frame).audio_tokens for frame in frames]
    assert len(prompt_steps) > len(frames)
    assert other != first
    pipeline.close()
