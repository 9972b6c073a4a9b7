"""Moshi's text stream: the SentencePiece tokenizer and a streaming detokenizer.

Moshi's text stream is its "inner monologue": the LM emits one text token id per 80 ms frame.
The ids come from a SentencePiece model (``tokenizer_spm_32k_3.model``, 32000 pieces) that has
byte-fallback pieces (``<0xE2>``, ...): a character the vocabulary lacks is spelled as the pieces of
its UTF-8 bytes, one byte per frame.

Special ids in Moshi's text stream:

- 3 = PAD. Emitted on most frames; it means "no new text".
- 0 = end-of-padding marker (``text_eop_token`` in the Rust code). No text.
- 32000 = the "initial" token (``text_card``). It exists only in the LM's embedding tables, not in
  SentencePiece; more generally every id outside ``[0, vocab_size)`` produces no text.
- 2 = EOS. Not acted on for Moshi; as a SentencePiece control piece it produces no text.

How the reference servers turn ids into text:

- The Python server sends ``id_to_piece(id)`` with every '▁' (U+2581) replaced by a space. That
  shows byte-fallback pieces raw ("<0xE2>") and starts the conversation with a space.
- The Rust server decodes the pair [previous real token, current token] and sends the part that
  extends the decode of [previous token] alone. That gets spaces right, but a character spelled
  with several byte pieces still comes out as U+FFFD (or not at all): a pair holds at most two
  of its bytes, and the decode of a lone partial byte is itself U+FFFD.

:class:`IncrementalDetokenizer` generalises the Rust approach so that the emitted text is exactly
what ``decode`` gives for the whole conversation: correct characters for byte-fallback sequences
(emitted once their last byte arrives, never as ``<0x..>`` or U+FFFD), one space per word start,
no leading space at the start of the stream, and PAD runs that neither break words nor add spaces.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable
from pathlib import Path

import sentencepiece

__all__ = [
    "END_OF_PADDING_ID",
    "EOS_ID",
    "INITIAL_TEXT_ID",
    "PAD_ID",
    "IncrementalDetokenizer",
    "JsonTokenizer",
    "TextTokenizer",
    "TokenizerError",
    "open_tokenizer",
]

PAD_ID = 3
"""Text padding token: emitted on most frames, produces no text."""
END_OF_PADDING_ID = 0
"""End-of-padding marker: produces no text."""
EOS_ID = 2
"""SentencePiece EOS: not acted on for Moshi, produces no text."""
INITIAL_TEXT_ID = 32000
"""The LM's "initial" text token (``text_card``); not a SentencePiece id, produces no text."""

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenizerError(ValueError):
    """The text tokenizer file is missing or is not a valid SentencePiece model."""


class _Vocabulary:
    """What both tokenizer files answer alike: where they came from and which ids are pieces."""

    _path: Path
    _vocab_size: int

    @property
    def path(self) -> Path:
        """The file the tokenizer was loaded from."""
        return self._path

    @property
    def vocab_size(self) -> int:
        """Number of pieces (32000 for Moshi); ids >= this are not text."""
        return self._vocab_size

    def is_piece_id(self, token_id: int) -> bool:
        """Whether ``token_id`` is a piece's id, i.e. in ``[0, vocab_size)``."""
        return 0 <= token_id < self._vocab_size


class TextTokenizer(_Vocabulary):
    """A SentencePiece text tokenizer loaded from a ``.model`` file.

    The file is read by Python and handed to SentencePiece as bytes, so paths with non-ASCII
    characters work on every platform.

    Raises:
        TokenizerError: if the file is missing, unreadable or not a valid SentencePiece model.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        try:
            data = self._path.read_bytes()
        except FileNotFoundError as err:
            raise TokenizerError(f"Text tokenizer file not found: '{self._path}'.") from err
        except OSError as err:
            raise TokenizerError(
                f"Cannot read the text tokenizer file '{self._path}' ({err.strerror or err})."
            ) from err
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(data)
        except (RuntimeError, OSError) as err:
            raise TokenizerError(
                f"'{self._path}' is not a valid SentencePiece model file ({str(err).strip()})."
            ) from err
        # An empty file parses as an empty model without error.
        if processor.get_piece_size() == 0:
            raise TokenizerError(f"'{self._path}' is not a valid SentencePiece model file (empty).")
        self._sp = processor
        self._vocab_size = processor.get_piece_size()

    @property
    def processor(self) -> sentencepiece.SentencePieceProcessor:
        """The underlying SentencePiece processor."""
        return self._sp

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added)."""
        return list(self._sp.encode(text, out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ids outside ``[0, vocab_size)`` (e.g. Moshi's 32000) are skipped.

        This is plain SentencePiece decoding: control pieces (BOS, EOS, PAD) give no text,
        consecutive byte pieces are merged into UTF-8 characters (each byte of an invalid or
        incomplete sequence gives one U+FFFD), and the leading space of the first word is dropped.
        """
        return self._sp.decode([int(i) for i in ids if self.is_piece_id(int(i))])

    def id_to_piece(self, token_id: int) -> str:
        """The piece string of ``token_id``, e.g. '▁hello' or '<0xE2>'."""
        return self._sp.id_to_piece(token_id)

    def eos_id(self) -> int:
        """The end-of-sequence piece's id (-1 where there is none)."""
        return self._sp.eos_id()

    def is_control(self, token_id: int) -> bool:
        """Whether ``token_id`` is a control piece (BOS, EOS, PAD): it never decodes to text."""
        return self.is_piece_id(token_id) and self._sp.is_control(token_id)

    def byte_value(self, token_id: int) -> int | None:
        """The byte value of a byte-fallback piece like '<0xE2>', else None."""
        if not self.is_piece_id(token_id) or not self._sp.is_byte(token_id):
            return None
        match = _BYTE_PIECE.fullmatch(self._sp.id_to_piece(token_id))
        return int(match.group(1), 16) if match else None


class JsonTokenizer(_Vocabulary):
    """The same vocabulary from a ``tokenizer.json`` (the transformers format's), read with the
    ``tokenizers`` package; it answers as :class:`TextTokenizer` does.

    transformers converts SentencePiece's control pieces and its unknown piece into "special"
    tokens, all of which give no text here. SentencePiece alone decodes the unknown piece (id 0)
    as " ⁇ "; Moshi's text stream never shows it (0 is its end-of-padding marker).

    Raises:
        TokenizerError: if the file is missing, unreadable or not a tokenizer.json.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from tokenizers import Tokenizer

        self._path = Path(path)
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise TokenizerError(f"Text tokenizer file not found: '{self._path}'.") from err
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or err
            raise TokenizerError(
                f"Cannot read the text tokenizer file '{self._path}' ({reason})."
            ) from err
        try:
            self._tokenizer = Tokenizer.from_str(text)
        except Exception as err:  # tokenizers raises its own Exception subclass
            raise TokenizerError(
                f"'{self._path}' is not a valid tokenizer.json file ({str(err).strip()})."
            ) from err
        self._vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        if self._vocab_size == 0:
            raise TokenizerError(f"'{self._path}' is not a valid tokenizer.json file (empty).")
        self._special = {
            token_id
            for token_id, token in self._tokenizer.get_added_tokens_decoder().items()
            if token.special
        }

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """As SentencePiece decodes: its decoder drops every leading space (a lone '▁' piece
        first, then '▁me', gives "me"), where tokenizer.json's Strip drops only one."""
        ids = [int(i) for i in ids if self.is_piece_id(int(i))]
        return self._tokenizer.decode(ids, skip_special_tokens=True).lstrip(" ")

    def id_to_piece(self, token_id: int) -> str:
        return self._tokenizer.id_to_token(token_id) or ""

    def is_control(self, token_id: int) -> bool:
        return token_id in self._special

    def byte_value(self, token_id: int) -> int | None:
        if not self.is_piece_id(token_id) or token_id in self._special:
            return None
        match = _BYTE_PIECE.fullmatch(self.id_to_piece(token_id))
        return int(match.group(1), 16) if match else None


def open_tokenizer(path: str | os.PathLike[str]) -> TextTokenizer | JsonTokenizer:
    """The text tokenizer in `path`: a SentencePiece model, or a tokenizer.json."""
    if Path(path).suffix == ".json":
        return JsonTokenizer(path)
    return TextTokenizer(path)


class IncrementalDetokenizer:
    """Turns Moshi's text stream, one token id per frame, into text as it arrives.

    Call :meth:`push` with each frame's text token; it returns the new text (often "").
    Concatenating the returned strings gives :attr:`text`, which equals ``tokenizer.decode`` of
    all the real tokens pushed so far, minus a trailing incomplete UTF-8 sequence and without
    leading spaces.

    Ids that give no text and leave the state untouched: ``pad_id`` (3), ``end_of_padding_id``
    (0), negative ids, ids >= ``vocab_size`` (e.g. the initial token 32000) and SentencePiece
    control pieces (e.g. EOS = 2).

    Approach: keep a short window of recent real token ids and the number of characters of its
    decode already emitted. On each push, decode the window and emit the characters beyond that
    count. If the window ends with byte pieces that are an incomplete UTF-8 sequence (a prefix of
    a multi-byte character), they are left out of the decode until the character completes, so
    neither U+FFFD nor raw ``<0x..>`` text is ever emitted for a valid sequence. Byte sequences
    that can never be valid UTF-8 come out as U+FFFD, as in ``decode``.

    To stay O(1) per token over a long conversation, the window restarts after every push with
    no pending bytes: it keeps only the last token as an anchor, whose own decode counts as
    already emitted. Decoding [anchor, new tokens] rather than [new tokens] keeps SentencePiece's
    word-start rule right: the '▁' of a piece becomes a space, except at the start of the decode,
    so only the very first word of the stream loses its leading space. (This is the Rust server's
    [previous, current] pair decoding, extended to hold back partial characters.) A token that
    decodes to nothing on its own (a lone '▁' piece) is not used as an anchor, since SentencePiece
    would then also strip the next word's space; the window grows by one token instead.
    """

    _MAX_WINDOW = 32
    """Restart the window at this length even without a good anchor (bounds the cost)."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        *,
        pad_id: int = PAD_ID,
        end_of_padding_id: int = END_OF_PADDING_ID,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_ids = frozenset({pad_id, end_of_padding_id})
        self._window: list[int] = []
        self._emitted_in_window = 0
        self._chunks: list[str] = []
        self._started = False

    @property
    def tokenizer(self) -> TextTokenizer:
        """The tokenizer used for decoding."""
        return self._tokenizer

    @property
    def text(self) -> str:
        """All text emitted since creation or the last :meth:`reset`."""
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""

    def reset(self) -> None:
        """Forget everything: the next word starts a new stream (no leading space)."""
        self._window = []
        self._emitted_in_window = 0
        self._chunks = []
        self._started = False

    def is_text_token(self, token_id: int) -> bool:
        """Whether ``token_id`` can produce text (not PAD, end-of-padding, out of range, control)."""
        return (
            token_id not in self._skip_ids
            and self._tokenizer.is_piece_id(token_id)
            and not self._tokenizer.is_control(token_id)
        )

    def push(self, token_id: int) -> str:
        """Add one frame's text token; return the text it completes (possibly "")."""
        token_id = int(token_id)
        if not self.is_text_token(token_id):
            return ""
        self._window.append(token_id)
        pending = self._pending_bytes()
        complete = self._window[: len(self._window) - pending]
        decoded = self._tokenizer.decode(complete)
        new_text = decoded[self._emitted_in_window :]
        self._emitted_in_window = max(self._emitted_in_window, len(decoded))

        if pending == 0:
            anchor_text = self._tokenizer.decode([token_id])
            if anchor_text or len(self._window) >= self._MAX_WINDOW:
                self._window = [token_id]
                self._emitted_in_window = len(anchor_text)

        if not self._started:
            new_text = new_text.lstrip(" ")
            self._started = bool(new_text)
        if new_text:
            self._chunks.append(new_text)
        return new_text

    def _pending_bytes(self) -> int:
        """How many trailing byte pieces of the window form an incomplete UTF-8 character."""
        trailing = bytearray()
        for token_id in reversed(self._window):
            value = self._tokenizer.byte_value(token_id)
            if value is None:
                break
            trailing.append(value)
        if not trailing:
            return 0
        trailing.reverse()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        decoder.decode(bytes(trailing), final=False)
        buffered, _ = decoder.getstate()
        return len(buffered)
