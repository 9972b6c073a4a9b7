"""The rest of the Moshi family: which checkpoints this app does not run, how to tell, and the line
that says so.

Kyutai and others publish more than Moshi dialogue models in the same layout. Each is recognised
before any weights are downloaded, and refused with one line that names it and what this app runs
instead:

    config.json  model_type "hibiki"        Hibiki (Hibiki-Zero: kv_repeat or "rope_concat")
                 model_type "tts"           Kyutai TTS
                 model_type "kyutai_speech_to_text"  Kyutai STT in the transformers format
                                            (Kyutai's own layout runs: model.stt)
                 conditioners that need a retrieval server (reference encoders)   MoshiRAG
    weights      vision keys (image_prefix.*, cross_attention)                    MoshiVis

PersonaPlex (model_type "personaplex", or a depth transformer for more codebooks than the config's
dep_q) is recognised the same way, and runs (`model.persona`): `weights_member` names it, and
`weights_refusal` lets it through.

The weights are looked at only where config.json leaves the architecture at Moshi 7B's defaults
(MoshiVis has no config.json): their safetensors header, read from the file or, for a repository,
from the hub without downloading the file. Plain data and strings: no torch, no imports of ours,
so `model.config`, `model.files` and `model.hub` can all use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Member:
    """A kind of checkpoint of the family that this app does not run."""

    name: str  # as its authors call it
    what: str  # what it does, in a few words
    later: bool = False  # a later version of this app is to run it
    instead: str = ""  # what this app runs in its place, where not INSTEAD


HIBIKI = Member("Hibiki", "Kyutai's French-to-English speech translation model")
HIBIKI_ZERO = Member("Hibiki-Zero", "Kyutai's speech translation model into English")
TTS = Member("Kyutai TTS", "Kyutai's text-to-speech model")
STT_TRANSFORMERS = Member(
    "Kyutai STT in the transformers format",
    "Kyutai's streaming speech-to-text model as transformers saves it",
    instead="it runs Kyutai STT as Kyutai publishes it: `moshi-desktop transcribe AUDIO --model "
    "kyutai/stt-2.6b-en` (or kyutai/stt-1b-en_fr)",
)
MOSHIRAG = Member("MoshiRAG", "a Moshi that looks up knowledge in a retrieval server")
MOSHIVIS = Member("MoshiVis", "Kyutai's Moshi that talks about images")
PERSONAPLEX = Member("PersonaPlex", "NVIDIA's Moshi steered by voice and role prompts")

INSTEAD = (
    "it runs Moshi dialogue models, such as kyutai/moshiko-pytorch-bf16 "
    "(`moshi-desktop download --list` shows them all)"
)

# model_type of config.json -> the member it means. "moshi" (or none) is Moshi dialogue.
_BY_MODEL_TYPE = {
    "hibiki": HIBIKI,
    "tts": TTS,
    "kyutai_speech_to_text": STT_TRANSFORMERS,  # kyutai/stt-2.6b-en-trfs (Kyutai's layout runs)
}

# A conditioner that encodes reference text for the LM (MoshiRAG's "reference_with_time", an
# ARC encoder) needs the retrieval server that finds that text.
_RETRIEVAL = re.compile(r"(?:^|_)(?:arc|rag)(?:_|$)|retriev|reference", re.IGNORECASE)
_VISION = re.compile(r"^image_prefix\.|(?:^|\.)cross_attention\.")
_DEPTH_SLICE = re.compile(r"^(?:depformer_in|linears)\.(\d+)\.")  # one per generated codebook


def refusal(member: Member, evidence: str) -> str:
    """The line that refuses `member` (it follows "<file>: "); `evidence` says how it was told."""
    runs = "does not run yet" if member.later else "does not run"
    instead = member.instead or INSTEAD
    return f"this is {member.name}, {member.what} ({evidence}), which this app {runs}: {instead}"


def config_member(raw: Any) -> tuple[Member, str] | None:
    """The member that a config.json (parsed) describes, with the evidence; None for a Moshi
    dialogue model or anything this module does not know (`model.config` judges those)."""
    if not isinstance(raw, Mapping):
        return None
    model_type = raw.get("model_type", "moshi")
    member = _BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if member is HIBIKI and (
        raw.get("kv_repeat") not in (None, 1) or raw.get("positional_embedding") == "rope_concat"
    ):
        member = HIBIKI_ZERO
    if member is not None:
        return member, f'model_type "{model_type}"'
    retrieval = _retrieval_conditioners(raw.get("conditioners"))
    if retrieval:
        return MOSHIRAG, f"conditioners that need a retrieval server: {', '.join(retrieval)}"
    return None


def config_refusal(raw: Any) -> str | None:
    """`refusal` for a config.json that describes another member, else None."""
    found = config_member(raw)
    return refusal(*found) if found else None


def _retrieval_conditioners(conditioners: Any) -> list[str]:
    if not isinstance(conditioners, Mapping):
        return []
    found = []
    for name, settings in conditioners.items():
        kind = settings.get("type", "") if isinstance(settings, Mapping) else ""
        if _RETRIEVAL.search(str(name)) or _RETRIEVAL.search(str(kind)):
            found.append(str(name))
    return found


def weights_member(names: Iterable[str], dep_q: int = 8) -> tuple[Member, str] | None:
    """The member whose LM weights hold the tensors `names` (a safetensors header's keys), where
    config.json expects a Moshi generating `dep_q` codebooks; None if nothing says so."""
    names = list(names)
    vision = sorted(n for n in names if _VISION.search(n))
    if vision:
        return MOSHIVIS, f"its weights hold vision tensors, such as {vision[0]}"
    slices = [int(m[1]) for n in names if (m := _DEPTH_SLICE.match(n))]
    codebooks = max(slices, default=-1) + 1
    if codebooks > dep_q:
        return PERSONAPLEX, (
            f"its depth transformer has weights for {codebooks} codebooks, where Moshi's has "
            f"{dep_q}"
        )
    return None


def weights_refusal(names: Iterable[str], dep_q: int = 8) -> str | None:
    """`refusal` for LM weights of another member that this app does not run, else None
    (PersonaPlex runs: `model.files` loads it as such)."""
    found = weights_member(names, dep_q)
    return refusal(*found) if found and found[0] is not PERSONAPLEX else None
