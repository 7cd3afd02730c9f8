"""Prompt templates: where a user's text prompt goes around the audio span, per model family.

The exported prefill takes prefix ids + audio embeddings + suffix ids, so a template is two strings, the text
before the audio and the text after it, with `{prompt}` where the user's prompt goes (in either), plus the BOS
token to put first, the tokens that end generation, and (WavLLM) the text its prompt-aware LoRA scale is
computed from. Each string is tokenized as a whole, as the model's own processor tokenizes it, so special
tokens written in a template (<|im_start|>, <|audio_bos|>) are recognised.

Formats (what each family's reference code renders):
- WavLLM (microsoft/SpeechT5 WavLLM, speechllm_dataset.py): "<s>[INST]<<SYS>>\\n{system}\\n<</SYS>>\\n\\n<SPEECH>"
  + audio + " </SPEECH> {prompt} [/INST]"; the LoRA scale comes from the LoRA-free pass over '"{prompt}"'.
- Qwen2-Audio-Instruct (its chat template): ChatML with "Audio 1: <|audio_bos|>" + audio + "<|audio_eos|>\\n{prompt}".
- Qwen-Audio-Chat: ChatML with "Audio 1:" + audio (its learned audio bos/eos embeddings are part of the span).
- plain decoders: BOS + audio + "\\n{prompt}\\n".
A real checkpoint whose tokenizer files carry a chat template gets the template rendered from it instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from fastadasp.core.errors import UserError

TEMPLATE_FORMAT = "fastadasp-prompt-template"
TEMPLATE_VERSION = 1
PROMPT = "{prompt}"

WAVLLM_SYSTEM = ("As a helpful language and speech assistant, you are able to understand the speech content provided "
                 "by the user, and assist the user with a variety of tasks using natural language.")
CHATML_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
CHATML_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class PromptTemplate:
    family: str
    prefix: str  # text before the audio span
    suffix: str  # text after it; PROMPT marks the user's prompt in either string
    bos: str | None = None  # token put before the prefix text
    stop: list[str] = field(default_factory=list)  # tokens that end a generated sequence
    scale_prompt: str | None = None  # WavLLM: the text whose LoRA-free hidden states give the LoRA scale
    source: str = ""

    def render(self, prompt: str) -> tuple[str, str, str | None]:
        """(prefix text, suffix text, scale text or None) for a user prompt."""
        def fill(text):
            return None if text is None else text.replace(PROMPT, prompt)

        return fill(self.prefix), fill(self.suffix), fill(self.scale_prompt)

    def to_json(self) -> dict:
        return {"format": TEMPLATE_FORMAT, "version": TEMPLATE_VERSION, **asdict(self)}

    def save(self, path: str | os.PathLike) -> None:
        from fastadasp.core.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PromptTemplate":
        try:
            data = json.loads(open(path, encoding="utf-8").read())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not a readable prompt template ({type(exc).__name__}); re-run export-engine") from None
        if not isinstance(data, dict) or data.get("format") != TEMPLATE_FORMAT or data.get("version") != TEMPLATE_VERSION:
            raise UserError(f"{path} is not a version-{TEMPLATE_VERSION} fastadasp prompt template; re-run export-engine")
        names = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise UserError(f"{path}: {exc}; re-run export-engine") from None


def wavllm_template() -> PromptTemplate:
    return PromptTemplate("wavllm", f"[INST]<<SYS>>\n{WAVLLM_SYSTEM}\n<</SYS>>\n\n<SPEECH>", f" </SPEECH> {PROMPT} [/INST]",
                          bos="<s>", stop=["</s>"], scale_prompt=f'"{PROMPT}"',
                          source="WavLLM's instruction format (speechllm_dataset.py of microsoft/SpeechT5)")


def qwen2_audio_template() -> PromptTemplate:
    return PromptTemplate("qwen2-audio", f"{CHATML_SYSTEM}Audio 1: <|audio_bos|>", f"<|audio_eos|>\n{PROMPT}{CHATML_ASSISTANT}",
                          stop=["<|im_end|>", "<|endoftext|>"], source="Qwen2-Audio-Instruct's chat format")


def qwen_audio_template() -> PromptTemplate:
    return PromptTemplate("qwen-audio", f"{CHATML_SYSTEM}Audio 1:", f"\n{PROMPT}{CHATML_ASSISTANT}",
                          stop=["<|im_end|>", "<|endoftext|>"], source="Qwen-Audio-Chat's chat format")


def plain_template(family: str, bos: str | None, eos: list[str]) -> PromptTemplate:
    return PromptTemplate(family, "", f"\n{PROMPT}\n", bos=bos, stop=eos,
                          source="plain decoder: BOS, audio embeddings, then the prompt")


# A user message with one audio item and the prompt, in the shapes chat templates accept.
_PROMPT_MARK = "\x00FASTADASP_PROMPT\x00"


def template_from_chat_template(chat_template: str, family: str, audio_placeholder: str, *, bos: str | None,
                                stop: list[str], source: str, scale_prompt: str | None = None) -> PromptTemplate:
    """Render a checkpoint's Jinja chat template for one user turn (an audio item, then the prompt) and split it
    at `audio_placeholder`, the text the model's processor replaces with audio (Qwen2-Audio: <|AUDIO|>).
    ValueError when the rendered text has no single placeholder or does not carry the prompt."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "user", "content": [{"type": "audio", "audio_url": "audio"}, {"type": "text", "text": _PROMPT_MARK}]}]
    text = env.from_string(chat_template).render(messages=messages, add_generation_prompt=True,
                                                 bos_token=bos or "", eos_token=stop[0] if stop else "")
    if text.count(audio_placeholder) != 1 or text.count(_PROMPT_MARK) != 1:
        raise ValueError(f"the chat template does not render one {audio_placeholder} and one prompt")
    if bos and text.startswith(bos):
        text = text[len(bos):]
    prefix, suffix = text.split(audio_placeholder)
    return PromptTemplate(family, prefix.replace(_PROMPT_MARK, PROMPT), suffix.replace(_PROMPT_MARK, PROMPT), bos=bos,
                          stop=list(stop), scale_prompt=scale_prompt, source=source)


def checkpoint_chat_template(folder) -> str | None:
    """The Jinja chat template shipped with a checkpoint's tokenizer files, if any."""
    from pathlib import Path

    folder = Path(folder)
    for name in ("chat_template.jinja",):
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    for name, key in (("chat_template.json", "chat_template"), ("tokenizer_config.json", "chat_template")):
        file = folder / name
        if file.is_file():
            try:
                value = json.loads(file.read_text(encoding="utf-8")).get(key)
            except ValueError:
                continue
            if isinstance(value, str):
                return value
    return None
