"""Token groups mean what they say: on the five families' published chat templates (tests/templates/*.jinja),
with sub-word BPE tokenizers trained here (offline, in-process) with each family's special tokens, and on the
zoo's word-level tokenizer; plus the one resolver, `TokenLayout.group`."""

from pathlib import Path

import pytest
import torch

import interp
from interp.errors import InputError
from interp.layout import GROUPS, TokenLayout
from interp.models import zoo as Z

from conftest import ARCHS, QUESTIONS, batch, images, zoo

TEMPLATES = Path(__file__).parent / "templates"
SYS = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
QWEN_USER = SYS + "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
ROWCOL = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
SPECIAL = {  # each family's special tokens (first: pad)
    "llama": ["<pad>", "<s>", "</s>", "<unk>", "<image>"],
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
             "<|video_pad|>"],
    "idefics3": ["<|endoftext|>", "<|begin_of_text|>", "<|im_start|>", "<end_of_utterance>",
                 "<fake_token_around_image>", "<image>", "<global-img>", *ROWCOL],
}
# template file → (zoo arch, tokenizer family, BPE style, prompt before the question, prompt after it, what the
# processor's row holds between its last image token and the question)
CASES = {
    "llava_1_5": ("llava", "llama", "metaspace", "USER: <image>\n", " ASSISTANT:", "\n"),
    "llava_next_vicuna": ("llava_next", "llama", "metaspace", "USER: <image>\n", " ASSISTANT:", "\n"),
    "llava_next_mistral": ("llava_next", "llama", "metaspace", "[INST] <image>\n", " [/INST]", "\n"),
    "qwen2_vl": ("qwen2_vl", "qwen", "bytelevel", QWEN_USER, "<|im_end|>\n<|im_start|>assistant\n", "<|vision_end|>"),
    "qwen2_5_vl": ("qwen2_5_vl", "qwen", "bytelevel", QWEN_USER, "<|im_end|>\n<|im_start|>assistant\n",
                   "<|vision_end|>"),
    "idefics3": ("idefics3", "idefics3", "bytelevel", "<|begin_of_text|>User:<image>", "<end_of_utterance>\nAssistant:",
                 "<fake_token_around_image>"),
    "smolvlm": ("idefics3", "idefics3", "bytelevel", "<|im_start|>User:<image>", "<end_of_utterance>\nAssistant:",
                "<fake_token_around_image>"),
}
ASKED = ["What color is the square?", "How many red objects are there in the picture?"]
ANSWERS = ["red", "three"]
WORDS = ("what color is the square circle star how many red blue objects are there in picture image left right of "
         "shape which describe this three two one green yes no").split()


def template(name: str) -> str:
    """The published template: the file minus its leading source comment."""
    head, body = (TEMPLATES / f"{name}.jinja").read_text().split("#}\n", 1)
    assert head.startswith("{#- Source:") and not body.endswith("\n")
    return body


def bpe(family: str, style: str, corpus: list[str], merges: int = 80):
    """A BPE `PreTrainedTokenizerFast` trained on `corpus` (special tokens cut out first) with `family`'s specials:
    `metaspace` like Llama's sentencepiece, `bytelevel` like Qwen's and SmolLM's GPT-2-style byte BPE."""
    import re

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = SPECIAL[family]
    pieces = [p for text in corpus for p in re.split("|".join(map(re.escape, special)), text) if p]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if style == "metaspace" else None))
    if style == "metaspace":  # pieces follow special tokens, where inference prepends no "▁" either
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted(set("".join(pieces)))
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    # few merges: question words come out as sub-words ("H" "ow"), as rare words do in a real vocabulary
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + len(special) + merges, min_frequency=2,
                                  special_tokens=special, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(pieces, trainer)
    if style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    kw = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>") if family == "llama" else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=special[0], additional_special_tokens=special[1:],
                                   padding_side="left", **kw)


def render(tmpl: str, question: str) -> str:
    """One user turn (an image, then the question) rendered by transformers' own jinja set-up."""
    from transformers.utils.chat_template_utils import render_jinja_template

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    out = render_jinja_template([msgs], chat_template=tmpl, add_generation_prompt=True)
    return (out[0] if isinstance(out, tuple) else out)[0]


def published_vlm(case: str, merges: int = 80):
    """A fresh zoo model of the case's family whose processor has the published template and a trained BPE."""
    arch, family, style, before, after, _ = CASES[case]
    tmpl = template(case)
    qs = ASKED + [" ".join(WORDS[i:i + 6]) + "?" for i in range(0, len(WORDS), 3)]
    corpus = [render(tmpl, q) + " " + a for q in qs for a in ANSWERS + WORDS[:6]] * 3
    tok = bpe(family, style, corpus, merges)
    model, proc = Z.build(arch)
    image_token = {"qwen": "<|image_pad|>"}.get(family, "<image>")
    model.config.image_token_id = tok.convert_tokens_to_ids(image_token)
    extra = {}
    if arch == "idefics3":
        extra = dict(image_seq_len=proc.image_seq_len)
    if arch.startswith("llava"):
        extra = dict(patch_size=proc.patch_size, vision_feature_select_strategy=proc.vision_feature_select_strategy,
                     num_additional_image_tokens=proc.num_additional_image_tokens)
    new = type(proc)(image_processor=proc.image_processor, tokenizer=tok, chat_template=tmpl, **extra)
    return interp.load(model, processor=new, check=False)  # vocab differs: no forward, layouts only


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("answers", [None, ANSWERS])
@pytest.mark.parametrize("merges", [80, 400])  # sub-word question words; merges across template and question
def test_groups_on_published_templates(case, answers, merges):
    arch, family, style, before, after, tail = CASES[case]
    vlm = published_vlm(case, merges)
    tok = vlm.tokenizer
    for q in ASKED:  # the data and the table agree: the template renders the prompt written above
        assert vlm.adapter.prompt(vlm.processor, 1, q) == before + q + after
    b = vlm.prepare(images=images(2), questions=ASKED, answers=answers)
    lay, ids = b.layout, b.input_ids
    assert torch.equal(lay.vision, ids == vlm.image_token_id) and torch.equal(lay.text, ~lay.vision & ~lay.pad)
    assert not (lay.question & lay.template).any() and not ((lay.question | lay.template) & lay.answer).any()
    assert torch.equal(lay.question | lay.template | lay.answer, lay.after_image)
    decode = lambda x: tok.decode(x.tolist(), clean_up_tokenization_spaces=False)  # noqa: E731
    for r, q in enumerate(ASKED):
        start = int(lay.vision[r].nonzero().max()) + 1
        rest = ids[r, start:][~lay.answer[r, start:]]
        # reference: the shortest run of tokens whose text contains the question (straddling tokens included)
        n = len(rest)
        i = max(i for i in range(n) if q in decode(rest[i:]))
        j = min(j for j in range(i + 1, n + 1) if q in decode(rest[i:j]))
        want = torch.zeros_like(lay.question[r])
        want[start + i:start + j] = True
        assert torch.equal(lay.question[r], want), (case, tok.convert_ids_to_tokens(ids[r][lay.question[r]]))
        assert decode(rest) == tail + q + after  # template ∪ question is all the text after the image
        if answers is not None:
            assert decode(ids[r][lay.answer[r]]).strip() == answers[r]
            assert lay.last[r].nonzero().item() == lay.answer[r].nonzero().min().item() - 1
        else:
            assert lay.last[r, -1]


def test_a_token_straddling_the_question_boundary_is_the_question():
    vlm = published_vlm("llava_1_5", merges=400)  # sentencepiece-style BPE learns "\nWhat": newline + question
    b = vlm.prepare(images=images(1), questions=ASKED[:1])
    first = b.input_ids[0][b.layout.question[0]][0].item()
    piece = vlm.tokenizer.convert_ids_to_tokens(first)
    assert piece.startswith("\n") and len(piece) > 1, piece  # the case occurs with this corpus
    assert not b.layout.template[0, b.layout.question[0].nonzero().min()]


@pytest.mark.parametrize("arch", ARCHS)
def test_zoo_question_group_is_the_question(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2, answers=["red", "two"])
    tok = vlm.tokenizer
    for r in range(2):
        words = lambda g: tok.convert_ids_to_tokens(b.input_ids[r][g[r]].tolist())  # noqa: E731
        assert words(b.layout.question) == QUESTIONS[r].split()
        assert words(b.layout.answer) == [["red"], ["two"]][r]
        assert b.layout.template[r].any() and not (b.layout.template[r] & b.layout.question[r]).any()


def test_slow_tokenizer_falls_back_to_searching_the_question(monkeypatch):
    vlm = zoo("qwen2_vl")
    fast = batch(vlm, 2).layout
    monkeypatch.setattr(type(vlm.tokenizer), "is_fast", property(lambda self: False))
    slow = batch(vlm, 2).layout
    assert torch.equal(slow.question, fast.question) and torch.equal(slow.template, fast.template)
    straddling = published_vlm("llava_1_5", merges=400)
    with pytest.raises(InputError, match="fast tokenizer"):
        straddling.prepare(images=images(1), questions=ASKED[:1])


@pytest.mark.parametrize("edit,question,found", [
    ("{{ content['text'] | trim }}", "  what?  ", "what?"),  # the sentinel's render places the trimmed text
    ("{{ content['text'] | upper }}", "what?", None),  # rewritten: no way to tell which characters are the question
])
def test_templates_that_transform_the_question(edit, question, found):
    vlm = published_vlm("qwen2_vl")
    vlm.processor.chat_template = template("qwen2_vl").replace("{{ content['text'] }}", edit)
    if found is None:
        with pytest.raises(InputError, match="rewrites the question text"):
            vlm.prepare(images=images(1), questions=[question])
        return
    b = vlm.prepare(images=images(1), questions=[question])
    assert vlm.tokenizer.decode(b.input_ids[0][b.layout.question[0]]) == found


# ---------------------------------------------------------------- the resolver


def _layout():
    #            pad  vis  vis  tmpl  q    q    tmpl ans
    vision = torch.tensor([[0, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    pad = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    question = torch.tensor([[0, 0, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    answer = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    return TokenLayout(vision=vision, text=~vision & ~pad, question=question, answer=answer, pad=pad, images=((),))


def _m(*bits):
    return torch.tensor([bits], dtype=torch.bool)


GROUP_TABLE = [
    ("vision", _m(0, 1, 1, 0, 0, 0, 0, 0), _m(0, 1, 1, 0, 0, 0, 0, 0, 0, 0)),
    ("text", _m(0, 0, 0, 1, 1, 1, 1, 1), _m(0, 0, 0, 1, 1, 1, 1, 1, 1, 1)),
    ("question", _m(0, 0, 0, 0, 1, 1, 0, 0), _m(0, 0, 0, 0, 1, 1, 0, 0, 0, 0)),
    ("template", _m(0, 0, 0, 1, 0, 0, 1, 0), _m(0, 0, 0, 1, 0, 0, 1, 0, 0, 0)),
    ("after_image", _m(0, 0, 0, 1, 1, 1, 1, 1), _m(0, 0, 0, 1, 1, 1, 1, 1, 1, 1)),
    ("answer", _m(0, 0, 0, 0, 0, 0, 0, 1), _m(0, 0, 0, 0, 0, 0, 0, 1, 0, 0)),
    ("last", _m(0, 0, 0, 0, 0, 0, 1, 0), _m(0, 0, 0, 0, 0, 0, 1, 0, 0, 0)),
    ("generated", _m(0, 0, 0, 0, 0, 0, 0, 0), _m(0, 0, 0, 0, 0, 0, 0, 0, 1, 1)),
    ("pad", _m(1, 0, 0, 0, 0, 0, 0, 0), _m(1, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
    ("all", _m(0, 1, 1, 1, 1, 1, 1, 1), _m(0, 1, 1, 1, 1, 1, 1, 1, 1, 1)),
]


def test_group_table_covers_every_name():
    assert sorted(name for name, *_ in GROUP_TABLE) == sorted(GROUPS)


@pytest.mark.parametrize("name,prompt,extended", GROUP_TABLE)
def test_group_resolves_names_before_and_after_generation(name, prompt, extended):
    lay = _layout()
    assert torch.equal(lay.group(name), prompt)
    assert torch.equal(lay.extend(2).group(name), extended)
    assert torch.equal(getattr(lay, name), prompt)  # attributes stay


def test_group_takes_tensors_and_callables_and_pads_prompt_groups():
    lay, ext = _layout(), _layout().extend(2)
    q = lay.question
    assert lay.group(q) is q
    assert torch.equal(lay.group(lambda l: l.question | l.answer), _m(0, 0, 0, 0, 1, 1, 0, 1))
    assert torch.equal(ext.group(q), _m(0, 0, 0, 0, 1, 1, 0, 0, 0, 0))  # prompt-length groups cover the prompt
    assert torch.equal(ext.group(lambda l: q), ext.group(q))


@pytest.mark.parametrize("bad,match", [
    ("questions", "unknown token group 'questions'; use one of vision, text, question"),
    (torch.zeros(1, 8), "must be a bool tensor of shape"),
    (torch.zeros(1, 5, dtype=torch.bool), r"\(1, 8\), got torch.bool \(1, 5\)"),
    (lambda lay: 3, "got int"),
])
def test_group_errors_say_what_was_expected(bad, match):
    with pytest.raises(InputError, match=match):
        _layout().group(bad)
