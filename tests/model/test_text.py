"""Tests for model/text.py: the SentencePiece wrapper and the streaming detokenizer.

A tiny SentencePiece model is trained once per session with the same special-id layout as
Moshi's tokenizer (0 = unk / end-of-padding, 1 = BOS, 2 = EOS, 3 = PAD) and byte fallback, so
that characters missing from its vocabulary ('€', 'ß', emoji) are spelled as UTF-8 byte pieces.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sentencepiece

from model.text import IncrementalDetokenizer, TextTokenizer, TokenizerError

PAD = 3
EOP = 0
EOS = 2
BOS = 1
INITIAL = 32000

SENTENCES = [
    "Hello, world! It's me.",
    "The quick brown fox jumps over the lazy dog.",
    "I think that we should talk about the weather today.",
    "How are you doing today, my friend?",
    "This is a small test of the tokenizer, nothing more.",
    "We went to the cafe and had a coffee with some cake.",
    "She said that it was going to rain all day long.",
    "Do you want to hear a story about a little robot?",
    "Well, I am not sure, but I will try my best.",
    "Café au lait, naïve résumé, déjà vu, crème brûlée.",
    "The café near the station serves a very good crème brûlée.",
]

# Characters that never occur in the training corpus: byte fallback must spell them.
NOT_IN_VOCAB = ["€", "ß", "😀", "日"]


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train a ~400-piece BPE SentencePiece model with byte fallback and Moshi's special ids."""
    prefix = tmp_path_factory.mktemp("spm") / "tiny"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 40),
        model_prefix=str(prefix),
        vocab_size=400,
        hard_vocab_limit=False,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


@pytest.fixture(scope="session")
def tok(model_path: Path) -> TextTokenizer:
    return TextTokenizer(model_path)


@pytest.fixture(scope="session")
def tok_no_dummy_prefix(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    """A model whose decode keeps a leading space (no dummy prefix, no whitespace cleanup)."""
    prefix = tmp_path_factory.mktemp("spm_raw") / "raw"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 40),
        model_prefix=str(prefix),
        vocab_size=400,
        hard_vocab_limit=False,
        model_type="bpe",
        byte_fallback=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    return TextTokenizer(prefix.with_suffix(".model"))


def pieces(tok: TextTokenizer, ids: list[int]) -> list[str]:
    return [tok.id_to_piece(i) for i in ids]


def stream(det: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    """Push every id and return what each push emitted."""
    return [det.push(i) for i in ids]


def with_padding(ids: list[int], seed: int = 0) -> list[int]:
    """Moshi-like stream: the initial token, then each id followed by runs of PAD and EOP."""
    rng = random.Random(seed)
    out = [INITIAL, PAD, PAD]
    for i in ids:
        out.append(i)
        out.extend(rng.choice([PAD, PAD, PAD, EOP]) for _ in range(rng.randint(0, 4)))
    return out


def assert_clean(chunks: list[str]) -> None:
    for chunk in chunks:
        assert "<0x" not in chunk, chunks
        assert "\ufffd" not in chunk, chunks
        assert "▁" not in chunk, chunks


# --- Preconditions on the trained model: without them the tests below would test nothing. ---


def test_tiny_model_has_moshi_special_ids_and_byte_fallback(tok: TextTokenizer) -> None:
    assert 300 <= tok.vocab_size <= 400
    assert pieces(tok, [0, 1, 2, 3]) == ["<unk>", "<s>", "</s>", "<pad>"]
    for ch in NOT_IN_VOCAB:
        ids = tok.encode(ch)
        byte_ids = [i for i in ids if tok.byte_value(i) is not None]
        assert [tok.byte_value(i) for i in byte_ids] == list(ch.encode("utf-8")), pieces(tok, ids)
    # Multi-byte characters span several frames, so they arrive split over several pushes.
    assert len("€".encode()) == 3
    assert len("😀".encode()) == 4
    # 'é' occurs in the corpus, so it is a regular piece, not byte fallback.
    assert all(tok.byte_value(i) is None for i in tok.encode("é"))


# --- TextTokenizer ---


def test_tokenizer_round_trip_and_out_of_range_ids(tok: TextTokenizer) -> None:
    text = "Hello, world! 10 € for a café 😀."
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([INITIAL, *ids, tok.vocab_size, -1]) == text
    assert tok.decode([]) == ""


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.model"
    with pytest.raises(TokenizerError, match="not found") as info:
        TextTokenizer(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"this is not a sentencepiece model\n" * 20, b""])
def test_garbage_tokenizer_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.model"
    path.write_bytes(content)
    with pytest.raises(TokenizerError, match="not a valid SentencePiece model") as info:
        TextTokenizer(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message and message.endswith(".")


def test_directory_instead_of_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=str(tmp_path).replace("\\", "\\\\")):
        TextTokenizer(tmp_path)


# --- IncrementalDetokenizer ---


@pytest.mark.parametrize("sentence", SENTENCES)
def test_round_trip_with_padding(tok: TextTokenizer, sentence: str) -> None:
    det = IncrementalDetokenizer(tok)
    chunks = stream(det, with_padding(tok.encode(sentence), seed=len(sentence)))
    assert "".join(chunks) == sentence
    assert det.text == sentence
    assert_clean(chunks)


def test_punctuation_and_spacing(tok: TextTokenizer) -> None:
    text = "Hello, world! It's me. How are you? Well, I am fine."
    det = IncrementalDetokenizer(tok)
    chunks = stream(det, with_padding(tok.encode(text)))
    assert det.text == text
    assert "  " not in det.text
    assert_clean(chunks)


def test_no_leading_space_at_stream_start_only(tok: TextTokenizer) -> None:
    det = IncrementalDetokenizer(tok)
    first = stream(det, tok.encode("Hello"))
    assert "".join(first) == "Hello"
    second = stream(det, [PAD, PAD, *tok.encode(" world"), PAD])
    assert "".join(second) == " world"
    assert det.text == "Hello world"


def test_leading_space_stripped_even_when_decode_keeps_it(
    tok_no_dummy_prefix: TextTokenizer,
) -> None:
    tok = tok_no_dummy_prefix
    ids = tok.encode(" Hello world")
    assert tok.id_to_piece(ids[0]).startswith("▁")
    assert tok.decode(ids) == " Hello world"  # precondition: this model keeps the space
    det = IncrementalDetokenizer(tok)
    chunks = stream(det, with_padding(ids))
    assert det.text == "Hello world"
    assert_clean(chunks)
    det.reset()
    assert "".join(stream(det, ids)) == "Hello world"


def test_multi_byte_characters_come_out_whole_once_complete(tok: TextTokenizer) -> None:
    for ch in NOT_IN_VOCAB:
        det = IncrementalDetokenizer(tok)
        ids = with_padding(tok.encode(f"a {ch} b"), seed=7)
        chunks = stream(det, ids)
        assert det.text == f"a {ch} b"
        assert_clean(chunks)
        # The character is emitted exactly once, in the push of its last byte; the pushes of the
        # bytes before it emit nothing.
        byte_positions = [n for n, i in enumerate(ids) if tok.byte_value(i) is not None]
        assert len(byte_positions) == len(ch.encode("utf-8")) >= 2
        assert all(chunks[n] == "" for n in byte_positions[:-1])
        assert chunks[byte_positions[-1]] == ch
        assert sum(chunk.count(ch) for chunk in chunks) == 1


def test_bytes_of_one_character_split_by_padding_and_specials(tok: TextTokenizer) -> None:
    ids = tok.encode("price: 5€, ok 😀😀")
    noisy: list[int] = []
    for i in ids:
        noisy += [i, PAD, EOP, INITIAL, -1, EOS, BOS, PAD]
    det = IncrementalDetokenizer(tok)
    chunks = stream(det, noisy)
    assert det.text == "price: 5€, ok 😀😀"
    assert_clean(chunks)


def test_accented_words(tok: TextTokenizer) -> None:
    text = "Straße, café, déjà vu, 日本 and 😀!"
    det = IncrementalDetokenizer(tok)
    chunks = stream(det, with_padding(tok.encode(text), seed=3))
    assert det.text == text
    assert_clean(chunks)


@pytest.mark.parametrize("token_id", [PAD, EOP, EOS, BOS, INITIAL, 400, 10**9, -1, -3])
def test_special_and_out_of_range_ids_give_no_text(tok: TextTokenizer, token_id: int) -> None:
    det = IncrementalDetokenizer(tok)
    assert det.push(token_id) == ""
    assert det.text == ""
    hello = tok.encode("Hello")
    assert "".join(stream(det, [hello[0], token_id, *hello[1:], token_id])) == "Hello"
    assert det.push(tok.vocab_size) == ""


def test_custom_special_ids(tok: TextTokenizer) -> None:
    ids = tok.encode("Hello world")
    marker = ids[0]  # pretend the first piece of "Hello" is the padding token
    det = IncrementalDetokenizer(tok, pad_id=marker, end_of_padding_id=-5)
    assert det.push(marker) == ""
    assert det.push(PAD) == ""  # 3 is still a SentencePiece control piece: no text
    assert det.text == ""


def test_reset_starts_a_fresh_stream(tok: TextTokenizer) -> None:
    det = IncrementalDetokenizer(tok)
    euro = tok.encode("€")
    stream(det, tok.encode("Hello there") + [b for b in euro if tok.byte_value(b) is not None][:2])
    assert det.text == "Hello there"
    det.reset()
    assert det.text == ""
    # No pending bytes survive the reset, and the first word has no leading space again.
    chunks = stream(det, tok.encode(" world"))
    assert "".join(chunks) == "world"
    assert det.text == "world"
    assert_clean(chunks)


def test_matches_full_decode_on_random_streams(tok: TextTokenizer) -> None:
    """Whatever the ids (valid or broken UTF-8, lone '▁' pieces), the streamed text is decode()."""
    rng = random.Random(1234)
    byte_ids = [i for i in range(tok.vocab_size) if tok.byte_value(i) is not None]
    high_bytes = [i for i in byte_ids if tok.byte_value(i) >= 0x80]
    normal_ids = [
        i for i in range(4, tok.vocab_size) if tok.byte_value(i) is None and not tok.is_control(i)
    ]
    lone_space = [i for i in normal_ids if tok.id_to_piece(i) == "▁"]
    for _ in range(200):
        ids = [
            rng.choice([rng.choice(normal_ids), rng.choice(high_bytes), PAD, *lone_space])
            for _ in range(rng.randint(1, 30))
        ]
        ids.append(tok.encode(".")[-1])  # ends any pending byte sequence
        det = IncrementalDetokenizer(tok)
        chunks = stream(det, ids)
        assert "".join(chunks) == det.text == tok.decode([i for i in ids if i != PAD]), pieces(
            tok, ids
        )


def test_lone_space_piece_keeps_both_spaces(tok: TextTokenizer) -> None:
    space = tok.processor.piece_to_id("▁")
    assert tok.id_to_piece(space) == "▁", "the tiny model has no lone '▁' piece"
    word = tok.encode("Hello")
    ids = [*word, space, PAD, *tok.encode(" world")]
    det = IncrementalDetokenizer(tok)
    assert "".join(stream(det, ids)) == tok.decode(ids) == "Hello  world"


def test_long_conversation_decodes_a_bounded_window(
    tok: TextTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = " ".join(SENTENCES + ["Price: 5€ 😀 日本 Straße."]) + " "
    ids = tok.encode(text * 30)
    longest = 0
    real_decode = tok.decode

    def spy(decode_ids: list[int]) -> str:
        nonlocal longest
        longest = max(longest, len(list(decode_ids)))
        return real_decode(decode_ids)

    det = IncrementalDetokenizer(tok)
    monkeypatch.setattr(tok, "decode", spy)
    stream(det, with_padding(ids))
    monkeypatch.undo()
    assert det.text == (text * 30).strip()
    assert longest <= 6
