"""Which of a prepared row's tokens are the question: its character span in the rendered prompt, mapped onto
the processor's token ids.

Fast tokenizers give each token's character span (`return_offsets_mapping`). The processor expands every image
placeholder into many tokens, so the rendered prompt's own encoding and the processor's row differ up to the
last image; after the last image placeholder the text is the same, and special tokens split the text before
the tokenizer's model runs, so the tokens are the same too. The two are aligned from the end of the row,
checked id for id. A token whose span overlaps the question's characters is a question token: a token that
straddles the question's boundary (a BPE merge of template and question text) belongs to the question.

Slow tokenizers have no offsets. Then, and wherever the id-for-id check fails, the question's own token ids are
searched for after the row's last vision token (its last occurrence before any answer), tokenized alone and
with a leading space. A question whose first or last token merges with the template's text is not found that
way, and `question_mask` raises `InputError` saying to use a fast tokenizer.
"""

from __future__ import annotations

import torch

from ..errors import InputError


def question_mask(tok, ids: torch.Tensor, vision: torch.Tensor, answer: torch.Tensor, prompts, spans,
                  image_token_id: int) -> torch.Tensor:
    """[B, T] bool: the tokens of each row's question.

    tok: the tokenizer the processor uses; ids: [B, T] the processor's `input_ids` (left-padded); vision,
    answer: [B, T] bool; prompts: B rendered prompts as given to the processor (answer included); spans: B
    `(start, end)` character spans of the question in them; image_token_id: the image placeholder's id.
    """
    B, T = ids.shape
    out = torch.zeros(B, T, dtype=torch.bool)
    encs = _encode_with_offsets(tok, list(prompts))
    for b in range(B):
        row = ids[b].tolist()
        start, end = spans[b]
        if start >= end:
            continue
        pos = None if encs is None else _by_offsets(row, encs[b], (start, end), image_token_id, b)
        if pos is None:
            vis = vision[b].nonzero()
            lo = int(vis.max()) + 1 if len(vis) else 0
            ans = answer[b].nonzero()
            hi = int(ans.min()) if len(ans) else T
            pos = _by_search(tok, row, lo, hi, prompts[b][start:end], b)
        out[b, pos] = True
    return out


def _encode_with_offsets(tok, prompts):
    """Per prompt `(ids, offsets)`, or None where the tokenizer cannot give offsets (a slow tokenizer)."""
    if not getattr(tok, "is_fast", False):
        return None
    try:
        enc = tok(prompts, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        return None
    return [(list(i), [tuple(o) for o in off]) for i, off in zip(enc["input_ids"], enc["offset_mapping"])]


def _by_offsets(row, enc, span, image_token_id, b):
    """Positions of the question's tokens in `row` from the offsets of the rendered prompt's encoding, or None
    where that encoding's tail after the last image placeholder is not the row's tail."""
    u, offs = enc
    marks = [i for i, t in enumerate(u) if t == image_token_id]
    if not marks:
        return None
    last = marks[-1]
    n = len(u) - last - 1
    if n == 0 or n > len(row) or row[len(row) - n:] != u[last + 1:]:
        return None
    start, end = span
    if start < offs[last][1]:
        raise InputError(f"row {b}: the chat template puts the question before the last image; interp locates "
                         "the question after the images (put the images first in the user turn)")
    base = len(row) - n
    return [base + j for j, (s, e) in enumerate(offs[last + 1:]) if e > s and s < end and e > start]


def _by_search(tok, row, lo, hi, question, b):
    """Positions of the last occurrence of the question's own ids in `row[lo:hi]` (fallback without offsets)."""
    for text in (question, " " + question):
        q = list(tok(text, add_special_tokens=False)["input_ids"])
        for i in range(hi - len(q), lo - 1, -1):
            if q and row[i:i + len(q)] == q:
                return list(range(i, i + len(q)))
    raise InputError(f"row {b}: cannot locate the question {question!r} among the tokens after the image: the "
                     f"tokenizer ({type(tok).__name__}) gives no character offsets and the question's first or last "
                     "token merges with the chat template's; load a fast tokenizer (AutoTokenizer use_fast=True)")
