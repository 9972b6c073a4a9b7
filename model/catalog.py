"""The catalog: the repositories this app knows and offers, one entry each, torch-free.

What the command line (`download --list`, `download`, the licence line before a download,
`doctor`) and the window (the model list, the download dialog, About) show of a model before it is
downloaded: its title, what it is, its licence, its size, its language and whether its repository
is gated (its licence must be accepted on the hub, and a token given, before the files can be
downloaded). The licence of the weights is each entry's own: the app assumes none for a model it
does not know.

Sizes are the published files' (rounded): what a download fetches. Plain data: no torch and no
imports of ours, so the window may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class Licence:
    name: str  # short, as the hub writes it: "CC-BY 4.0"
    full_name: str
    url: str
    terms: str  # what it asks of a user, in a few words


CC_BY = Licence(
    "CC-BY 4.0",
    "Creative Commons Attribution 4.0",
    "https://creativecommons.org/licenses/by/4.0/",
    "credit the authors when you share the weights or work made with them",
)
CC_BY_NC = Licence(
    "CC BY-NC 4.0",
    "Creative Commons Attribution-NonCommercial 4.0",
    "https://creativecommons.org/licenses/by-nc/4.0/",
    "non-commercial use only, crediting the authors",
)
NVIDIA_OPEN_MODEL = Licence(
    "NVIDIA Open Model License",
    "NVIDIA Open Model License Agreement",
    "https://www.nvidia.com/en-us/agreements/enterprise-software/nvidia-open-model-license/",
    "commercial use allowed; keep its notice with the weights and do not bypass the model's "
    "safety guardrails",
)


@dataclass(frozen=True)
class Entry:
    """One repository of the catalog."""

    repo: str  # Hugging Face repository id
    title: str  # for menus
    about: str  # what it is, one sentence
    publisher: str  # who publishes the weights
    licence: Licence
    size: int  # bytes to download (the published files, rounded)
    languages: tuple[str, ...]
    gated: bool = False  # accept its licence on the hub (and give a token) before downloading
    personaplex: bool = False  # takes a voice and a persona (model.persona)

    @property
    def url(self) -> str:
        """The repository's page, where a gated one's licence is accepted."""
        return repo_url(self.repo)

    @property
    def size_text(self) -> str:
        return f"{self.size / 1e9:.1f} GB"

    @property
    def language_text(self) -> str:
        return " and ".join(self.languages)

    @property
    def facts(self) -> str:
        """Language, size, licence and gating, for one line: "English · 15.8 GB · CC-BY 4.0"."""
        facts = [self.language_text, self.size_text, self.licence.name]
        return " · ".join(facts + (["gated"] if self.gated else []))

    @property
    def summary(self) -> str:
        """The title with its facts, for menus."""
        return f"{self.title} · {self.facts}"

    @property
    def licence_sentence(self) -> str:
        """Who publishes the weights, under what, and what that asks (no URL)."""
        return (
            f"{self.title}: weights published by {self.publisher} under {self.licence.name} "
            f"({self.licence.full_name}): {self.licence.terms}"
        )

    @property
    def licence_notice(self) -> str:
        """`licence_sentence` with the licence's address, for the terminal."""
        return f"{self.licence_sentence}. {self.licence.url}"

    @property
    def gated_note(self) -> str:
        """What a gated repository asks before its files can be downloaded ("" if not gated)."""
        if not self.gated:
            return ""
        return (
            f"Gated: accept its licence on {self.url} (logged in to Hugging Face), then give this "
            "app your token (`hf auth login`, `huggingface-cli login`, or HF_TOKEN)"
        )

    def describe(self) -> list[str]:
        """Every fact of the entry, a line each: what the `download` command prints."""
        lines = [
            f"{self.repo}: {self.title}",
            f"  {self.about}",
            f"  language: {self.language_text}; download: about {self.size_text}",
            f"  licence: {self.licence.name} ({self.licence.full_name}), {self.licence.url}: "
            f"{self.licence.terms}",
        ]
        if self.gated:
            lines.append(f"  {self.gated_note}")
        return lines


_KYUTAI_7B = 15_800_000_000  # model.safetensors 15.4 GB + Mimi 385 MB + the tokenizer
_KYUTAI_Q8 = 8_400_000_000  # model.q8.safetensors 8.0 GB + Mimi + the tokenizer
_TRANSFORMERS_7B = 15_600_000_000  # the bf16 shards the index names (LM and Mimi together)
_PERSONAPLEX_7B = 17_100_000_000  # model.safetensors 16.7 GB (dep_q 16) + Mimi + voices.tgz
_NU = "Nagoya University (nu-dialogue)"
_KMHF = "kmhf (Kyutai's weights, converted)"

_ENTRIES = (
    Entry(
        "kyutai/moshiko-pytorch-bf16",
        "Moshiko (male voice), bfloat16",
        "Kyutai's Moshi 7B with a male voice, as released in 2024.",
        "Kyutai",
        CC_BY,
        _KYUTAI_7B,
        ("English",),
    ),
    Entry(
        "kyutai/moshika-pytorch-bf16",
        "Moshika (female voice), bfloat16",
        "Kyutai's Moshi 7B with a female voice, as released in 2024.",
        "Kyutai",
        CC_BY,
        _KYUTAI_7B,
        ("English",),
    ),
    Entry(
        "kyutai/moshiko-pytorch-q8",
        "Moshiko (male voice), int8",
        "Moshiko with its linear weights in int8: about half the memory of bfloat16.",
        "Kyutai",
        CC_BY,
        _KYUTAI_Q8,
        ("English",),
    ),
    Entry(
        "kyutai/moshika-pytorch-q8",
        "Moshika (female voice), int8",
        "Moshika with its linear weights in int8: about half the memory of bfloat16.",
        "Kyutai",
        CC_BY,
        _KYUTAI_Q8,
        ("English",),
    ),
    Entry(
        "kyutai/moshika-rl-seamless",
        "Moshika RL seamless (female voice, 2026), bfloat16",
        "Kyutai's 2026 Moshika, aligned for interactivity: better pauses, turn-taking and "
        "backchannels.",
        "Kyutai",
        CC_BY_NC,
        _KYUTAI_7B,
        ("English",),
        gated=True,
    ),
    Entry(
        "nvidia/personaplex-7b-v1",
        "PersonaPlex (choose its voice and persona), bfloat16",
        "NVIDIA's Moshi 7B fine-tuned to speak with a voice you choose and play a role you "
        "describe (January 2026).",
        "NVIDIA",
        NVIDIA_OPEN_MODEL,
        _PERSONAPLEX_7B,
        ("English",),
        gated=True,
        personaplex=True,
    ),
    Entry(
        "kyutai/personaplex-rl-seamless",
        "PersonaPlex RL seamless (voice and persona, 2026), bfloat16",
        "PersonaPlex aligned for interactivity by Kyutai: better pauses, turn-taking and "
        "backchannels.",
        "Kyutai",
        CC_BY_NC,
        _PERSONAPLEX_7B,
        ("English",),
        gated=True,
        personaplex=True,
    ),
    Entry(
        "nu-dialogue/j-moshi-ext",
        "J-Moshi-ext (Japanese), bfloat16",
        "Nagoya University's Japanese Moshi, trained on more (augmented) dialogue than J-Moshi; "
        "its tokenizer is Japanese under Kyutai's file name, its Mimi is Moshiko's.",
        _NU,
        CC_BY_NC,
        _KYUTAI_7B,
        ("Japanese",),
    ),
    Entry(
        "nu-dialogue/j-moshi",
        "J-Moshi (Japanese), bfloat16",
        "Nagoya University's Japanese Moshi, from Moshiko; its tokenizer is Japanese under "
        "Kyutai's file name, its Mimi is Moshiko's.",
        _NU,
        CC_BY_NC,
        _KYUTAI_7B,
        ("Japanese",),
    ),
    Entry(
        "kmhf/hf-moshiko",
        "Moshiko (male voice), transformers format",
        "Moshiko saved by Hugging Face transformers (MoshiForConditionalGeneration): sharded "
        "weights with Mimi inside, tokenizer.json.",
        _KMHF,
        CC_BY,
        _TRANSFORMERS_7B,
        ("English",),
    ),
    Entry(
        "kmhf/hf-moshika",
        "Moshika (female voice), transformers format",
        "Moshika saved by Hugging Face transformers (MoshiForConditionalGeneration): sharded "
        "weights with Mimi inside, tokenizer.json.",
        _KMHF,
        CC_BY,
        _TRANSFORMERS_7B,
        ("English",),
    ),
)

CATALOG: dict[str, Entry] = {entry.repo: entry for entry in _ENTRIES}  # in menu order
DEFAULT_REPO = "kyutai/moshiko-pytorch-bf16"


def repo_url(repo: str) -> str:
    """A repository's page on the hub."""
    return f"{HUB_URL}/{repo}"


def licence_notice(source: str, is_repo: bool = True) -> str:
    """One line on the licence of the weights at `source` (a repository id, or a folder when not
    `is_repo`): the catalog entry's, or where to read it for a model the catalog does not know."""
    entry = CATALOG.get(source)
    if entry is not None:
        return entry.licence_notice
    if is_repo:
        page = repo_url(source)
        return f"{source} is not in this app's catalog: read its weights' licence on {page}"
    return f"the weights in {source} come with their own licence: check it before you share them"


def gated_message(repo: str, has_token: bool) -> str:
    """What to do when the hub refuses `repo`'s files because it is gated: where to accept its
    licence and where the token goes. One line."""
    page = repo_url(repo)
    if not has_token:
        return (
            f"repository {repo} is gated and no Hugging Face token is set on this computer: "
            f"accept its licence on {page} (logged in), then run `hf auth login` (or "
            "`huggingface-cli login`) with a token of that account, or set the HF_TOKEN "
            "environment variable"
        )
    return (
        f"repository {repo} is gated and the account of your Hugging Face token has no access "
        f"yet: accept its licence on {page} with that account (or give another account's "
        "token: `hf auth login`, `huggingface-cli login`, or the HF_TOKEN environment variable)"
    )
