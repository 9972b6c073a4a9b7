"""model/catalog.py: one entry per repository, each with its own licence, size, language and
gating; the licence line and the gated message say what to do. The hub's answer to a gated
repository: a fake hub on 127.0.0.1 (no network)."""

from __future__ import annotations

import pytest

from model.catalog import (
    CATALOG,
    CC_BY,
    CC_BY_NC,
    DEFAULT_REPO,
    NVIDIA_OPEN_MODEL,
    gated_message,
    licence_notice,
)
from model.files import CheckpointError, is_repo_id
from model.hub import locate_model


def test_the_default_comes_first_and_each_entry_is_a_repository_id():
    assert next(iter(CATALOG)) == DEFAULT_REPO
    assert all(is_repo_id(repo) and entry.repo == repo for repo, entry in CATALOG.items())


def test_the_published_models_with_their_own_licences():
    expected = {
        "kyutai/moshiko-pytorch-bf16": (CC_BY, ("English",), False),
        "kyutai/moshika-pytorch-bf16": (CC_BY, ("English",), False),
        "kyutai/moshiko-pytorch-q8": (CC_BY, ("English",), False),
        "kyutai/moshika-pytorch-q8": (CC_BY, ("English",), False),
        "kyutai/moshika-rl-seamless": (CC_BY_NC, ("English",), True),
        "nvidia/personaplex-7b-v1": (NVIDIA_OPEN_MODEL, ("English",), True),
        "kyutai/personaplex-rl-seamless": (CC_BY_NC, ("English",), True),
        "nu-dialogue/j-moshi-ext": (CC_BY_NC, ("Japanese",), False),
        "nu-dialogue/j-moshi": (CC_BY_NC, ("Japanese",), False),
        "kmhf/hf-moshiko": (CC_BY, ("English",), False),
        "kmhf/hf-moshika": (CC_BY, ("English",), False),
    }
    assert {repo: (e.licence, e.languages, e.gated) for repo, e in CATALOG.items()} == expected
    for entry in CATALOG.values():
        assert entry.title and entry.about.endswith(".") and entry.publisher
        assert 8e9 <= entry.size <= 18e9  # a 7B model, int8 or bfloat16
        assert entry.url == f"https://huggingface.co/{entry.repo}"
        assert entry.licence.url.startswith(
            ("https://creativecommons.org/licenses/", "https://www.nvidia.com/")
        )
    assert [r for r, e in CATALOG.items() if e.personaplex] == [
        "nvidia/personaplex-7b-v1",
        "kyutai/personaplex-rl-seamless",
    ]


def test_each_entry_shows_licence_size_and_language():
    seamless = CATALOG["kyutai/moshika-rl-seamless"]
    assert seamless.summary == (
        "Moshika RL seamless (female voice, 2026), bfloat16 · English · 15.8 GB · "
        "CC BY-NC 4.0 · gated"
    )
    lines = seamless.describe()
    assert (
        lines[0] == "kyutai/moshika-rl-seamless: Moshika RL seamless (female voice, 2026), bfloat16"
    )
    assert "turn-taking" in lines[1] and "English" in lines[2] and "15.8 GB" in lines[2]
    assert "CC BY-NC 4.0" in lines[3] and "non-commercial" in lines[3]
    assert "https://huggingface.co/kyutai/moshika-rl-seamless" in lines[4]
    assert "HF_TOKEN" in lines[4] and "huggingface-cli login" in lines[4]
    assert len(CATALOG[DEFAULT_REPO].describe()) == 4  # not gated: no such line


def test_the_licence_line_is_the_models_own():
    assert licence_notice(DEFAULT_REPO).endswith(CC_BY.url) and "Kyutai" in licence_notice(
        DEFAULT_REPO
    )
    japanese = licence_notice("nu-dialogue/j-moshi")
    assert "CC BY-NC 4.0" in japanese and "Nagoya University" in japanese
    other = licence_notice("someone/their-moshi")
    assert "not in this app's catalog" in other and "CC" not in other
    assert other.endswith("https://huggingface.co/someone/their-moshi")
    assert "own licence" in licence_notice("/models/mine", is_repo=False)


def test_the_gated_message_says_where_to_accept_and_where_the_token_goes():
    for has_token in (False, True):
        message = gated_message("kyutai/moshika-rl-seamless", has_token)
        assert "https://huggingface.co/kyutai/moshika-rl-seamless" in message
        assert "hf auth login" in message and "huggingface-cli login" in message
        assert "HF_TOKEN" in message and "\n" not in message
    assert "no Hugging Face token" in gated_message("a/b", False)
    assert "has no access yet" in gated_message("a/b", True)


@pytest.mark.parametrize("token", [None, "hf_test_token"])
def test_a_gated_repository_says_how_to_get_access(fake_hub, tiny_checkpoint, monkeypatch, token):
    repo = "kyutai/moshika-rl-seamless"
    fake_hub.repos[repo] = tiny_checkpoint
    fake_hub.gated.add(repo)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: token)
    with pytest.raises(CheckpointError) as err:
        locate_model(repo)
    assert str(err.value) == gated_message(repo, has_token=token is not None)
    assert not [r for r in fake_hub.ranges if r[1].endswith(".safetensors")]
