"""Text in and out: the model's tokenizer as a Hugging Face `tokenizers` JSON file, and a small real tokenizer for
the tiny presets, built offline.

Real models bring their tokenizer from the checkpoint's own files (tokenizer.json, or the files transformers
reads to build one). Tiny presets have random weights and no files, so a BPE tokenizer is trained here at build
time on a fixed English text, with the layout of the family it stands in for:
- "sentencepiece" (LLaMA / WavLLM): SentencePiece-style word boundaries (U+2581), <unk> / <s> / </s> at ids
  0 / 1 / 2, printable ASCII plus tab and newline as the alphabet (other characters become <unk>);
- "byte_level" (Qwen): GPT-2 byte-level pieces, so any UTF-8 text round-trips, with the family's special
  tokens at the top of the vocabulary (Qwen2-Audio's <|AUDIO|> at the model's audio_token_id).
The merges are learned by a plain greedy loop with a fixed tie-break, so the same preset always gets the same
tokenizer, byte for byte, on every machine.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

# The text the tiny tokenizers learn their merges from: fixed, so every build is identical.
TINY_CORPUS = """\
Transcribe the audio. Translate the speech into English. Summarize what the speaker says.
What is the speaker's emotion? Describe the sound in one sentence. Answer the question in the audio.
The quick brown fox jumps over the lazy dog. A speech language model listens to the audio and then
writes the answer as text. The audio is split into short frames; each frame becomes a feature vector,
and the encoder turns the features into audio tokens that the decoder reads next to the text of the prompt.
Redundant audio tokens are merged inside the decoder, so the model reads fewer tokens and answers faster.
Please listen carefully to the recording and write down every word that is spoken, with punctuation.
The weather today is sunny with a light breeze. The meeting starts at nine and ends at noon.
She said that the train was late again, so they took the bus to the station instead.
In the beginning there was silence, then music, then a voice that counted from one to ten.
Speech recognition, speaker verification, emotion recognition and spoken question answering are tasks.
The assistant is helpful, honest and brief. It reads the instruction, then the audio, then it answers.
"""

SENTENCEPIECE, BYTE_LEVEL = "sentencepiece", "byte_level"
_SPIECE_SPACE = "\u2581"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (what the ByteLevel pre-tokenizer emits)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def _learn_merges(words: Counter, alphabet: list[str], budget: int) -> list[tuple[str, str]]:
    """Greedy BPE: merge the most frequent adjacent pair until `budget` merges or no pair is left. Ties go to
    the lexicographically smallest pair, so the result never depends on hashing or iteration order."""
    known = set(alphabet)
    corpus = [(list(w), n) for w, n in sorted(words.items()) if all(c in known for c in w)]
    merges: list[tuple[str, str]] = []
    while len(merges) < budget:
        pairs: Counter = Counter()
        for symbols, n in corpus:
            for a, b in zip(symbols, symbols[1:]):
                pairs[a, b] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for symbols, _ in corpus:
            i = 0
            while i < len(symbols) - 1:
                if symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    symbols[i:i + 2] = [joined]
                i += 1
    return merges


def build_tiny_tokenizer(style: str, vocab_size: int, specials: list[str], *, top_specials: bool = False):
    """A deterministic BPE tokenizer of exactly `vocab_size` ids (a `tokenizers.Tokenizer`).

    specials: special tokens, placed at ids 0.. (top_specials False) or as the last ids, in order (True).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if style == SENTENCEPIECE:
        pre = pre_tokenizers.Metaspace(replacement=_SPIECE_SPACE, prepend_scheme="always", split=True)
        decoder = decoders.Metaspace(replacement=_SPIECE_SPACE, prepend_scheme="always", split=True)
        alphabet = [_SPIECE_SPACE, "\t", "\n"] + [chr(c) for c in range(ord("!"), ord("~") + 1)]
    elif style == BYTE_LEVEL:
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        decoder = decoders.ByteLevel()
        table = _bytes_to_unicode()
        alphabet = [table[b] for b in range(256)]
    else:
        raise ValueError(f"unknown tokenizer style {style!r}; choose {SENTENCEPIECE} or {BYTE_LEVEL}")
    room = vocab_size - len(specials) - len(alphabet)
    if room < 0:
        raise ValueError(f"a {style} tokenizer needs at least {len(specials) + len(alphabet)} ids, not {vocab_size}")
    words = Counter(piece for piece, _ in pre.pre_tokenize_str(TINY_CORPUS))
    merges = _learn_merges(words, alphabet, room)
    pieces = alphabet + [a + b for a, b in merges]
    # A short corpus may run out of pairs: the rest of the ids are reserved tokens no text produces.
    pieces += [f"<|reserved_{k}|>" for k in range(vocab_size - len(specials) - len(pieces))]
    ordered = pieces + specials if top_specials else specials + pieces
    vocab = {token: i for i, token in enumerate(ordered)}
    unk = "<unk>" if "<unk>" in specials else None
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=unk is not None))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoder
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    assert tokenizer.get_vocab_size() == vocab_size, (tokenizer.get_vocab_size(), vocab_size)
    return tokenizer


def checkpoint_directory(path: str | os.PathLike) -> Path:
    """The folder holding a checkpoint's side files: the path itself, or the folder of a checkpoint file."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def checkpoint_tokenizer(path: str | os.PathLike):
    """(tokenizers.Tokenizer, source) from a checkpoint's own files, or (None, why) when there are none.

    tokenizer.json is taken as it is; otherwise transformers builds the fast tokenizer from what it finds
    (vocab.json + merges.txt, tokenizer.model, ...), offline."""
    from tokenizers import Tokenizer

    folder = checkpoint_directory(path)
    file = folder / "tokenizer.json"
    if file.is_file():
        return Tokenizer.from_file(str(file)), f"{file}"
    try:
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        backend = getattr(fast, "backend_tokenizer", None)
        if backend is not None:
            return Tokenizer.from_str(backend.to_str()), f"tokenizer files in {folder}"
        why = f"transformers read the tokenizer in {folder} but it has no `tokenizers` form"
    except Exception as exc:  # noqa: BLE001 - any failure means "no tokenizer here"; the reason is reported
        why = f"no tokenizer.json in {folder} and transformers could not build one ({type(exc).__name__})"
    return None, why


class TextTokenizer:
    """A `tokenizers.Tokenizer` as the pipeline uses it: text -> ids without implicit BOS/EOS (templates place
    those), ids -> text without special tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TextTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(os.fspath(path)))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def save(self, path: str | os.PathLike) -> None:
        from fastadasp.core.files import atomic_write_text

        atomic_write_text(path, self.tokenizer.to_str(pretty=True) + "\n")
