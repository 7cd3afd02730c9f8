"""Text in and out: the tiny presets' offline tokenizers (exact vocabulary, deterministic, round trip), the
per-family prompt templates, and tokenizers / chat templates taken from a checkpoint's own files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from fastadasp.core.errors import UserError
from fastadasp.models.prompt_template import (
    PROMPT,
    PromptTemplate,
    qwen2_audio_template,
    template_from_chat_template,
    wavllm_template,
)
from fastadasp.models.tokenizer import TextTokenizer, build_tiny_tokenizer, checkpoint_tokenizer
from support import TINY_PRESETS

ASCII = ["Transcribe the audio.", "What is the speaker's emotion?\nAnswer in one word.", "a  b\tc 123 [INST] <<SYS>>"]
UNICODE = ["Übersetze das: «héllo wörld» — 你好", "emoji 🎧 ok"]

# Qwen2-Audio-Instruct's chat template (its tokenizer files), which the export renders for real checkpoints.
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != "
    "'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] "
    "}}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in "
    "message['content'] %}{% if 'audio' in content or 'audio_url' in content %}{% set audio_count.value = "
    "audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in "
    "content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_tiny_presets_get_a_tokenizer_of_their_vocabulary(tiny, name):
    lm = tiny(name)
    tokenizer, template, source = lm.text_assets()
    assert tokenizer.vocab_size == lm.args.vocab_size and "built offline" in source
    byte_level = lm.tiny_tokenizer_style == "byte_level"
    for text in ASCII + (UNICODE if byte_level else []):
        ids = tokenizer.encode(text)
        assert ids and all(0 <= i < lm.args.vocab_size for i in ids)
        assert tokenizer.decode(ids) == text
    # BPE merges were learned: common words are single tokens or close to it.
    assert len(tokenizer.encode("the audio")) <= 4
    for token in [template.bos, *template.stop]:
        if token is not None:
            assert tokenizer.token_id(token) is not None, token
    if not byte_level:  # SentencePiece layout, and characters outside its alphabet become <unk>
        assert [tokenizer.token_id(t) for t in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
        assert tokenizer.token_id("<unk>") in tokenizer.encode("é")


def test_qwen2_audio_placeholder_is_the_models_audio_token(tiny):
    lm = tiny("tiny-qwen2-audio")
    tokenizer, template, _ = lm.text_assets()
    assert tokenizer.token_id("<|AUDIO|>") == lm.audio_token_id == lm.args.vocab_size - 1
    prefix, suffix, _ = template.render("Transcribe the audio.")
    ids = tokenizer.encode(prefix)
    assert ids[0] == tokenizer.token_id("<|im_start|>") and ids[-1] == tokenizer.token_id("<|audio_bos|>")
    assert tokenizer.encode(suffix)[0] == tokenizer.token_id("<|audio_eos|>")
    assert tokenizer.decode(tokenizer.encode(prefix + suffix)) == "system\nYou are a helpful assistant.\nuser\nAudio 1: " \
        "\nTranscribe the audio.\nassistant\n"  # special tokens dropped on the way out


def test_tiny_tokenizers_are_the_same_on_every_build():
    """Merges come from a fixed text with a fixed tie-break: a fresh interpreter with another hash seed builds
    the same file."""
    here = build_tiny_tokenizer("byte_level", 300, ["<|endoftext|>"], top_specials=True).to_str()
    code = ("from fastadasp.models.tokenizer import build_tiny_tokenizer as b; "
            "print(b('byte_level', 300, ['<|endoftext|>'], top_specials=True).to_str())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert there.strip() == here.strip()
    assert build_tiny_tokenizer("sentencepiece", 288, ["<unk>", "<s>", "</s>"]).to_str() == \
        build_tiny_tokenizer("sentencepiece", 288, ["<unk>", "<s>", "</s>"]).to_str()


def test_a_vocabulary_too_small_for_the_alphabet_is_refused():
    with pytest.raises(ValueError, match="needs at least 259 ids"):
        build_tiny_tokenizer("byte_level", 258, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])


def test_templates_place_the_prompt_and_round_trip(tmp_path):
    w = wavllm_template()
    prefix, suffix, scale = w.render("Transcribe the audio.")
    assert prefix.startswith("[INST]<<SYS>>\n") and prefix.endswith("<SPEECH>") and PROMPT not in prefix
    assert suffix == " </SPEECH> Transcribe the audio. [/INST]" and scale == '"Transcribe the audio."'
    assert w.bos == "<s>" and w.stop == ["</s>"]
    assert w.render("{x} and {prompt}")[1] == " </SPEECH> {x} and {prompt} [/INST]"  # braces are plain text
    w.save(tmp_path / "t.json")
    assert PromptTemplate.load(tmp_path / "t.json") == w
    data = json.loads((tmp_path / "t.json").read_text())
    data["version"] = 7
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="not a version-1 fastadasp prompt template"):
        PromptTemplate.load(tmp_path / "t.json")


def test_a_chat_template_renders_the_family_format():
    rendered = template_from_chat_template(QWEN2_AUDIO_CHAT_TEMPLATE, "qwen2-audio", "<|AUDIO|>", bos=None,
                                           stop=["<|im_end|>"], source="chat template")
    expected = qwen2_audio_template()
    assert (rendered.prefix, rendered.suffix) == (expected.prefix, expected.suffix)
    with pytest.raises(ValueError, match=re.escape("one <|AUDIO|> and one prompt")):
        template_from_chat_template("{{ messages[0]['role'] }}", "qwen2-audio", "<|AUDIO|>", bos=None, stop=[],
                                    source="x")


def test_a_checkpoint_brings_its_own_tokenizer_and_chat_template(tiny, tmp_path):
    lm = tiny("tiny-qwen2-audio")
    tokenizer, _, _ = lm.text_assets()
    folder = tmp_path / "Qwen2-Audio-7B-Instruct"
    folder.mkdir()
    tokenizer.save(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN2_AUDIO_CHAT_TEMPLATE}))
    lm.checkpoint_path = str(folder)
    try:
        from_files, template, source = lm.text_assets()
    finally:
        lm.checkpoint_path = None
    assert source == str(folder / "tokenizer.json")
    assert from_files.encode("Transcribe the audio.") == tokenizer.encode("Transcribe the audio.")
    assert template.source == "the checkpoint's chat template" and template.prefix == qwen2_audio_template().prefix


def test_a_checkpoint_without_tokenizer_files_says_so(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    tokenizer, why = checkpoint_tokenizer(tmp_path / "model.pt")
    assert tokenizer is None and "no tokenizer.json" in why and str(tmp_path) in why


def test_text_tokenizer_file_round_trip(tmp_path):
    tokenizer = TextTokenizer(build_tiny_tokenizer("sentencepiece", 256, ["<unk>", "<s>", "</s>"]))
    tokenizer.save(tmp_path / "tokenizer.json")
    again = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    assert again.vocab_size == 256 and again.encode(ASCII[1]) == tokenizer.encode(ASCII[1])
    assert again.encode("") == [] and again.decode([1, *again.encode("hi"), 2]) == "hi"
