"""Offline processor of the toy model: a word-level tokenizer + CLIP image processor in a LlavaProcessor.

The prompt format is the chat template; training builds exactly the same ids (tests check this):

    <s> <image> question : what color is the circle ? answer :   →  then "red </s>"

    >>> proc = build_processor()
    >>> enc = proc(images=[img], text=[prompt], return_tensors="pt")   # <image> → 64 image tokens
"""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

from interp.toy import scenes

SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
PROMPT_WORDS = ("question", "answer", ":", "?", ".", ",")
QUESTION_WORDS = ("what", "color", "shape", "is", "the", "object", "objects", "small", "large", "how", "many", "are",
                  "there", "a", "an", "or", "of", "left", "right", "above", "below", "yes", "no")
PATCH = 8
N_IMAGE_TOKENS = (scenes.SIZE // PATCH) ** 2  # 64: CLS dropped by the "default" feature strategy
# Per-channel pixel statistics of the generator's scenes (measured on 3000 samples, rounded).
MEAN, STD = (0.50, 0.49, 0.48), (0.14, 0.12, 0.14)

CHAT_TEMPLATE = (
    "{{ '<s>' }}"
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ ' <image>' }}"
    "{% elif item['type'] == 'text' %}{{ ' question : ' + item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% elif message['role'] == 'assistant' %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ ' answer : ' + item['text'] + ' </s>' }}"
    "{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ ' answer :' }}{% endif %}"
)


def vocabulary() -> list[str]:
    """Every token: specials first (ids 0..4), then prompt words, question words, colours, shapes, numbers."""
    words = [*SPECIAL, *PROMPT_WORDS, *QUESTION_WORDS, *scenes.COLORS, *scenes.SHAPES,
             *scenes.PLURAL.values(), *scenes.NUMBERS]
    return list(dict.fromkeys(words))


def prompt(question: str) -> str:
    """The training / inference prompt for one question (equal to the chat template's output)."""
    return f"<s> <image> question : {question} answer :"


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Specials are matched before pre-tokenisation, so "<image><image>..." (the processor's expansion) splits.
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", padding_side="left", model_max_length=256)
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def build_processor() -> LlavaProcessor:
    # The PIL backend: the default one needs torchvision, which this project never installs.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": scenes.SIZE}, crop_size={"height": scenes.SIZE, "width": scenes.SIZE},
        do_resize=True, do_center_crop=True, resample=3, image_mean=list(MEAN), image_std=list(STD))
    return LlavaProcessor(image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE, image_token="<image>")
