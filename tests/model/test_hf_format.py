"""The transformers format (kmhf/hf-moshiko's): loaded as Kyutai's layout, proven by its owners.

The fixture is made by transformers itself: a small random `MoshiForConditionalGeneration`, saved
with `save_pretrained` (sharded, with its index), and its tokenizer converted by transformers from
our SentencePiece model. Then:
- transformers' own forward on those weights gives what ours gives (text logits, depth logits,
  Mimi's codes and audio): the name mapping, the q/k permutation and the unstacking are proven by
  the format's owner, not by our own inverse;
- the same weights written in Kyutai's layout give, through our pipeline and through Kyutai's
  package, exactly the tokens the transformers folder gives through ours (greedy, fp32).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers", reason="needs transformers (test dependency)")

from model.checkpoint import fuse_attention, load_lm, load_mimi  # noqa: E402
from model.config import MIMI_NAME, MOSHI_NAME, TOKENIZER_NAME  # noqa: E402
from model.files import CheckpointError, read_config, resolve_folder  # noqa: E402
from model.generate import SamplingSettings  # noqa: E402
from model.hf_config import moshi_config  # noqa: E402
from model.hub import locate_model  # noqa: E402
from model.pipeline import Pipeline  # noqa: E402
from model.streaming import streaming  # noqa: E402
from model.text import IncrementalDetokenizer, JsonTokenizer, TextTokenizer  # noqa: E402
from model.tiny import MIMI_CONFIG_NAME, TINY_LM, TINY_MIMI, train_tokenizer  # noqa: E402

TEXT_CARD, CARD, K = 200, 64, 8
FRAME = 1920

# transformers' spelling of model.tiny's Moshi (TINY_LM, TINY_MIMI).
HF_MIMI = dict(
    hidden_size=32,
    num_filters=4,
    codebook_size=CARD,
    codebook_dim=16,
    vector_quantization_hidden_dimension=16,
    num_quantizers=K,
    num_hidden_layers=2,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=2,
    upsample_groups=32,
    sliding_window=20,
)
HF_MOSHI = dict(
    vocab_size=TEXT_CARD,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    ffn_dim=176,  # 2 x (2 x int(4.125 x 32) // 3): TINY_LM's gating
    sliding_window=16,
    num_codebooks=K,
)
HF_DEPTH = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=88)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights at scales where every stage carries information: embeddings N(0, 1), linears and
    convolutions N(0, 1 / fan-in), norms near 1, codebooks at the latent's scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("codebook.embed_sum"):  # smaller at each stage, as the residual
                stage = int(name.split(".layers.")[1].split(".")[0])
                value = 0.3 * 0.7**stage * torch.randn(tensor.shape, generator=g)
            elif name.endswith("codebook.cluster_usage"):
                value = torch.rand(tensor.shape, generator=g) + 0.5
            elif name.endswith("codebook.initialized"):
                value = torch.ones(tensor.shape)
            elif name.endswith("layer_scale.scale"):
                value = torch.rand(tensor.shape, generator=g) + 0.5
            elif "layernorm" in name or name.endswith("norm.weight"):
                base = 0.0 if name.endswith(".bias") else 1.0
                value = base + 0.2 * torch.randn(tensor.shape, generator=g)
            elif "embed_tokens" in name:
                value = torch.randn(tensor.shape, generator=g)
            elif name.endswith(".bias"):
                value = 0.1 * torch.randn(tensor.shape, generator=g)
            elif tensor.dim() >= 2:
                fan_in = tensor.shape[-1] if tensor.dim() in (2, 3) and "conv" not in name else None
                fan_in = fan_in or tensor[0].numel()
                value = torch.randn(tensor.shape, generator=g) / math.sqrt(fan_in)
            else:
                continue
            tensor.copy_(value)


def _hf_moshi(seed: int = 0):
    config = transformers.MoshiConfig(
        **HF_MOSHI,
        audio_encoder_config=transformers.MimiConfig(**HF_MIMI).to_dict(),
        depth_decoder_config=dict(HF_DEPTH),
    )
    model = transformers.MoshiForConditionalGeneration(config).eval()
    _randomize(model, seed)
    return model


def _convert_tokenizer(spm: Path, folder: Path) -> None:
    """tokenizer.json as transformers converts a SentencePiece model (LlamaTokenizer's rules)."""
    source = folder.parent / f"{folder.name}-spm"
    source.mkdir()
    shutil.copy(spm, source / "tokenizer.model")
    tokenizer = transformers.LlamaTokenizer.from_pretrained(str(source), legacy=False)
    tokenizer.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The same random Moshi as a transformers folder (sharded) and in Kyutai's layout."""
    root = tmp_path_factory.mktemp("hf")
    hf = _hf_moshi(seed=2)  # a draw where each of the 8 codebooks varies within 10 frames
    hf_folder = root / "hf"
    hf.save_pretrained(str(hf_folder), max_shard_size="150KB")
    spm = root / TOKENIZER_NAME
    train_tokenizer(spm, TEXT_CARD)
    _convert_tokenizer(spm, hf_folder)
    (hf_folder / "generation_config.json").write_text(
        json.dumps(
            {
                "do_sample": True,
                "temperature": 0.6,
                "top_k": 20,
                "depth_decoder_config": {"do_sample": True, "temperature": 0.9, "top_k": 200},
            }
        )
    )

    # Kyutai's layout: config.json, one LM file (fused attention), Mimi's file and config, the
    # SentencePiece model. The tensors are those transformers saved, under Kyutai's names.
    files = resolve_folder(hf_folder)
    lm, mimi = load_lm(files, dtype=torch.float32), load_mimi(files)
    kyutai = root / "kyutai"
    kyutai.mkdir()
    shutil.copy(spm, kyutai / TOKENIZER_NAME)
    config = dict(TINY_LM, mimi_config_name=MIMI_CONFIG_NAME)
    (kyutai / "config.json").write_text(json.dumps(config))
    (kyutai / MIMI_CONFIG_NAME).write_text(json.dumps(TINY_MIMI))
    for module, name in ((lm, MOSHI_NAME), (mimi, MIMI_NAME)):
        state = fuse_attention({k: v.contiguous() for k, v in module.state_dict().items()})
        save_file(state, str(kyutai / name))
    return {"hf": hf_folder, "kyutai": kyutai, "model": hf}


def test_the_folder_is_what_save_pretrained_writes(folders):
    names = sorted(p.name for p in folders["hf"].iterdir())
    assert "model.safetensors.index.json" in names and "tokenizer.json" in names
    assert sum(name.startswith("model-0") for name in names) >= 2  # sharded
    assert not any(name.endswith(".model") for name in names)  # no SentencePiece file
    files = resolve_folder(folders["hf"])
    assert files.config.format == "transformers"
    assert files.lm_weights.name == "model.safetensors.index.json"
    assert files.tokenizer.name == "tokenizer.json"


def test_transformers_forward_gives_our_logits(folders):
    """Several steps of the temporal transformer and every depth step, on transformers' own
    modules and on ours loaded from its folder."""
    hf = folders["model"]
    lm = load_lm(resolve_folder(folders["hf"]), dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    B, T = 2, 5
    text = torch.randint(0, TEXT_CARD + 1, (B, T), generator=g)
    audio = torch.randint(0, CARD + 1, (B, 2 * K, T), generator=g)
    with torch.no_grad():
        embeds = hf.decoder.model.embed_tokens(text) + sum(
            hf.embed_tokens[k](audio[:, k]) for k in range(2 * K)
        )
        out = hf.decoder(inputs_embeds=embeds, return_dict=True)
        with streaming(lm, B):
            ours = [
                lm.forward_temporal(torch.cat([text[:, None, t : t + 1], audio[..., t : t + 1]], 1))
                for t in range(T)
            ]
    hidden = torch.cat([h for h, _ in ours], 1)
    logits = torch.cat([l for _, l in ours], 1)
    assert out.logits.std() > 0.5
    torch.testing.assert_close(logits, out.logits, rtol=1e-4, atol=1e-4)
    _no_near_ties(out.logits, logits)
    torch.testing.assert_close(hidden, out.last_hidden_state, rtol=1e-4, atol=1e-4)

    # The depth transformer: one frame, teacher-forced (the text token, then codebooks 0..6).
    previous = torch.randint(0, CARD, (B, K), generator=g)
    previous[:, 0] = torch.randint(0, TEXT_CARD, (B,), generator=g)
    last = hidden[:, -1:]
    with torch.no_grad():
        ref = hf.depth_decoder(
            input_ids=previous,
            last_hidden_state=last.expand(B, K, -1).contiguous(),
            return_dict=True,
        ).logits
        with streaming(lm, B):
            ours = torch.cat([lm.forward_depth(k, previous[:, k, None], last) for k in range(K)], 1)
    assert ref.std() > 0.5
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    _no_near_ties(ref, ours)


def _no_near_ties(ref: torch.Tensor, ours: torch.Tensor) -> None:
    """Every greedy pick wins by far more than the two implementations differ by, so the same
    argmax is no accident."""
    top = ref.reshape(-1, ref.shape[-1]).topk(2).values
    assert (top[:, 0] - top[:, 1]).min() > 10 * (ref - ours).abs().max()
    assert torch.equal(ref.argmax(-1), ours.argmax(-1))


def _chirp(frames: int, seed: int) -> np.ndarray:
    t = np.arange(frames * FRAME) / 24000
    noise = np.random.default_rng(seed).standard_normal(t.shape)
    return (0.3 * np.sin(2 * np.pi * (150 * t + 300 * t**2)) + 0.05 * noise).astype(np.float32)


def _run(folder: Path, audio: np.ndarray):
    pipeline = Pipeline.load(folder, "cpu", "float32", sampling=SamplingSettings(greedy=True))
    tokens, pcm, text = [], [], []
    for i in range(len(audio) // FRAME):
        out = pipeline.step(audio[i * FRAME : (i + 1) * FRAME])
        if out.pcm is not None:
            tokens.append([out.text_token, *out.audio_tokens])
            pcm.append(out.pcm)
            text.append(out.text)
    return tokens, np.concatenate(pcm), "".join(text)


def _original(folder: Path, audio: np.ndarray):
    """Kyutai's package on the Kyutai-layout folder, frame by frame."""
    loaders = pytest.importorskip("moshi.models.loaders", reason="needs the original `moshi`")
    from moshi.models.lm import LMGen

    cfg = json.loads((folder / "config.json").read_text())
    mimi_cfg = json.loads((folder / cfg.pop("mimi_config_name")).read_text())
    mimi = loaders.get_mimi(str(folder / MIMI_NAME), mimi_cfg, device="cpu")
    lm = loaders.get_moshi_lm(
        str(folder / MOSHI_NAME), lm_kwargs=cfg, device="cpu", dtype=torch.float32
    )
    gen = LMGen(lm.eval(), use_sampling=False)
    tokens = []
    with torch.no_grad(), mimi.streaming(1), gen.streaming(1):
        for i in range(len(audio) // FRAME):
            frame = torch.from_numpy(audio[i * FRAME : (i + 1) * FRAME])[None, None]
            out = gen.step(mimi.encode(frame))
            if out is not None:
                tokens.append(out[0, :, 0].tolist())
    return tokens


@pytest.mark.slow
def test_a_conversation_is_the_same_in_both_layouts_and_in_kyutais_package(folders):
    audio = _chirp(40, seed=3)
    hf_tokens, hf_pcm, hf_text = _run(folders["hf"], audio)
    tokens, pcm, text = _run(folders["kyutai"], audio)
    assert hf_tokens == tokens and hf_text == text
    np.testing.assert_array_equal(hf_pcm, pcm)
    assert _original(folders["kyutai"], audio) == tokens
    # Every stream carries information: the text and each codebook vary over the conversation.
    columns = np.array(tokens).T
    assert all(len(set(column)) >= 5 for column in columns), [len(set(c)) for c in columns]


def test_transformers_mimi_gives_our_codes_and_audio(folders):
    """Within Mimi's attention window (transformers' sliding window ends one step apart from
    Kyutai's context, which our Mimi follows: tests/model/test_mimi.py proves that part against
    Kyutai's package, and the conversation above runs far past it)."""
    hf = folders["model"].audio_encoder
    mimi = load_mimi(resolve_folder(folders["hf"]))
    frames = TINY_MIMI["transformer"]["context"] // 2  # 2 transformer steps a frame
    audio = torch.from_numpy(_chirp(frames, seed=5))[None, None]
    with torch.no_grad():
        ref_codes = hf.encode(audio, num_quantizers=K).audio_codes  # [1, K, frames]
        with streaming(mimi, 1):
            codes = torch.cat(
                [mimi.encode(audio[..., i * FRAME : (i + 1) * FRAME]) for i in range(frames)], -1
            )
        assert torch.equal(codes, ref_codes)
        assert all(len(codes[0, k].unique()) >= 2 for k in range(K)), codes.tolist()  # codes vary
        ref_pcm = hf.decode(ref_codes).audio_values
        with streaming(mimi, 1):
            pcm = torch.cat([mimi.decode(codes[..., i : i + 1]) for i in range(frames)], -1)
    torch.testing.assert_close(pcm, ref_pcm, rtol=1e-4, atol=1e-5)


def test_tokenizer_json_decodes_as_sentencepiece(folders):
    spm = TextTokenizer(folders["kyutai"] / TOKENIZER_NAME)
    hf = JsonTokenizer(folders["hf"] / "tokenizer.json")
    assert hf.vocab_size == spm.vocab_size == TEXT_CARD
    g = np.random.default_rng(0)
    text = "Hello, how are you doing today? I play the piano and sing a little bit."
    assert hf.encode(text) == spm.encode(text)
    for _ in range(300):
        ids = g.integers(1, TEXT_CARD + 1, size=int(g.integers(1, 10))).tolist()  # not 0: <unk>
        assert hf.decode(ids) == spm.decode(ids), ids
    # The live transcript: the same text, piece by piece.
    stream = g.integers(0, TEXT_CARD + 1, size=400).tolist()
    pieces = [IncrementalDetokenizer(t) for t in (hf, spm)]
    assert [d.push(i) for i in stream for d in pieces[:1]] == [
        d.push(i) for i in stream for d in pieces[1:]
    ]


def test_generation_config_gives_the_sampling_defaults(folders):
    files = resolve_folder(folders["hf"])
    assert files.config.lm_gen_config == {
        "temp_text": 0.6,
        "top_k_text": 20,
        "temp": 0.9,
        "top_k": 200,
    }
    sampling = SamplingSettings.from_lm_gen_config(files.config.lm_gen_config)
    assert (sampling.text_temperature, sampling.text_top_k) == (0.6, 20)
    assert (sampling.temperature, sampling.top_k) == (0.9, 200)


def test_transformers_4x_spellings_give_the_same_config(folders, tmp_path):
    raw = json.loads((folders["hf"] / "config.json").read_text())
    config = moshi_config(raw, "config.json")
    old = dict(raw)
    old["rope_theta"] = old.pop("rope_parameters")["rope_theta"]
    mimi = dict(old.pop("audio_encoder_config"))
    mimi["rope_theta"] = mimi.pop("rope_parameters")["rope_theta"]
    old["audio_encoder_config"] = mimi
    depth = old.pop("depth_decoder_config")  # the first releases: flat depth_* keys
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim"):
        old[f"depth_{key}"] = depth[key]
    old["torch_dtype"] = old.pop("dtype", "float32")
    assert moshi_config(old, "config.json") == config
    assert config.lm.delays == TINY_LM["delays"] and config.lm.dim_feedforward == 132
    assert config.lm.depformer_dim_feedforward == 66 and config.mimi.transformer.context == 20


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(num_key_value_heads=1), "num_key_value_heads = 1 is not supported"),
        (dict(hidden_act="gelu"), "hidden_act = 'gelu' is not supported"),
        (dict(audio_encoder_config=None), "audio_encoder_config (Mimi's config) is missing"),
    ],
)
def test_what_our_model_cannot_compute_is_refused_by_name(folders, tmp_path, edit, message):
    raw = json.loads((folders["hf"] / "config.json").read_text())
    raw.update(edit)
    if raw["audio_encoder_config"] is None:
        del raw["audio_encoder_config"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_config(tmp_path / "config.json", "config.json")


def test_a_missing_shard_or_tensor_is_named(folders, tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(folders["hf"], folder)
    shards = sorted(folder.glob("model-0*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match=f"weights shard \\({shards[-1].name}\\)"):
        resolve_folder(folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shards[-1].name}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing"):
        load_lm(resolve_folder(folder), dtype=torch.float32)
        load_mimi(resolve_folder(folder))


@pytest.mark.slow
def test_transformers_mimi_alone_serves_as_the_codec(folders, tmp_path):
    """kyutai/mimi: Mimi saved by transformers alone, named by a Kyutai folder's config.json."""
    mimi_folder = tmp_path / "mimi"
    folders["model"].audio_encoder.save_pretrained(str(mimi_folder))
    folder = tmp_path / "kyutai"
    shutil.copytree(folders["kyutai"], folder)
    config = json.loads((folder / "config.json").read_text())
    shutil.copy(mimi_folder / "model.safetensors", folder / "mimi.safetensors")
    shutil.copy(mimi_folder / "config.json", folder / "mimi.json")
    config.update(mimi_name="mimi.safetensors", mimi_config_name="mimi.json")
    (folder / "config.json").write_text(json.dumps(config))
    audio = _chirp(12, seed=7)
    tokens, pcm, _ = _run(folder, audio)
    ref_tokens, ref_pcm, _ = _run(folders["kyutai"], audio)
    assert tokens == ref_tokens
    np.testing.assert_array_equal(pcm, ref_pcm)


@pytest.mark.slow
def test_a_repository_downloads_only_what_the_index_names(folders, fake_hub, tmp_path):
    """kmhf/hf-moshiko holds a second, larger set of shards beside the index's: never fetched."""
    repo = tmp_path / "repo"
    shutil.copytree(folders["hf"], repo)
    (repo / "model-00001-of-00002.safetensors").write_bytes(b"a second shard set" * 100)
    (repo / "model-00002-of-00002.safetensors").write_bytes(b"a second shard set" * 100)
    fake_hub.repos["kmhf/hf-tiny"] = repo
    files = locate_model("kmhf/hf-tiny")
    fetched = {request[1] for request in fake_hub.requests}
    assert "model-00001-of-00002.safetensors" not in fetched
    assert {p.name for p in folders["hf"].glob("model-0*")} <= fetched
    assert files.config.format == "transformers" and files.tokenizer.name == "tokenizer.json"
    assert files.config.lm_gen_config["temp"] == 0.9
    audio = _chirp(6, seed=8)
    assert _run(files, audio)[0] == _run(folders["hf"], audio)[0]


def test_inspect_reads_the_format_from_headers(folders):
    from model.inspect import inspect_model

    member = "a Moshi of dim 32 and 2 layers"
    for name, expected in (
        ("hf", rf"{member}, transformers format \(\d+ shards, tokenizer\.json\)"),
        ("kyutai", re.escape(f"{member}, Kyutai's layout (fused attention keys)")),
    ):
        report = inspect_model(resolve_folder(folders[name]))
        lines = [f"{c.level} {c.message}" for c in report.checks]
        assert report.ok, lines
        assert re.fullmatch(f"ok Model: {expected}", lines[0]), lines


@pytest.mark.slow
def test_talk_and_doctor_take_a_transformers_folder(folders, tmp_path, capsys):
    """What a user runs: `--model` names the folder."""
    import soundfile

    from app.cli import main

    audio = _chirp(10, seed=9)
    soundfile.write(tmp_path / "in.wav", audio, 24000, subtype="FLOAT")
    traces = {}
    for name in ("hf", "kyutai"):
        trace = tmp_path / f"{name}.jsonl"
        argv = ["talk", str(tmp_path / "in.wav"), str(tmp_path / f"{name}.wav")]
        assert main([*argv, "--model", str(folders[name]), "--greedy", "--trace", str(trace)]) == 0
        traces[name] = [json.loads(line) for line in trace.read_text().splitlines()]
    assert traces["hf"] == traces["kyutai"] and len(traces["hf"]) >= 9
    capsys.readouterr()
    assert main(["doctor", "--model", str(folders["hf"])]) in (0, 1)  # 1: no audio device here
    assert "transformers format" in capsys.readouterr().out


def test_speech_to_text_in_the_transformers_format_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "kyutai_speech_to_text", "transformers_version": "4.53.0"})
    )
    with pytest.raises(CheckpointError, match="this is Kyutai STT"):
        resolve_folder(tmp_path)


def test_transformers_defaults_are_moshi_7b_and_kyutais_mimi():
    """transformers' defaults (MoshiConfig(), MimiConfig(): kmhf/hf-moshika's shapes) read as
    Kyutai's Moshi 7B and Mimi, with 8 codebooks in use."""
    from model.config import LMConfig, MimiConfig

    config = moshi_config({"model_type": "moshi", "audio_encoder_config": {}}, "config.json")
    assert config.lm == LMConfig()
    assert config.mimi == MimiConfig(num_codebooks=8)
    full = transformers.MoshiConfig(audio_encoder_config=transformers.MimiConfig().to_dict())
    assert moshi_config(full.to_dict(), "config.json") == config


def test_every_missing_tensor_is_named_before_any_is_read(folders, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hf"
    shutil.copytree(folders["hf"], folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    gone = [
        "decoder.model.layers.1.mlp.fc1.weight",
        "depth_decoder.layers.0.self_attn.k_proj.linear.weight",
    ]
    for key in gone:
        shard = folder / index["weight_map"].pop(key)
        state = load_file(shard)
        del state[key]
        save_file(state, str(shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as error:
        load_lm(resolve_folder(folder), dtype=torch.float32)
    named = ["decoder.model.layers.1.mlp.fc1.weight", "depth_decoder.layers.0.self_attn.k_proj"]
    assert all(f"{key}" in str(error.value) for key in named), error.value
    assert str(error.value).count("missing") == 2, error.value
