"""Loading, adapters, TokenLayout, zoo: parity with plain HF and with the processors' own expansion."""

import pytest
import torch

import interp
from interp.errors import InputError, InterpError, UnsupportedModelError

from conftest import ARCHS, QUESTIONS, batch, images, zoo


@pytest.mark.parametrize("arch", ARCHS)
def test_layout_matches_processor(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    lay, ids = b.layout, b.input_ids
    assert torch.equal(lay.vision, ids == vlm.image_token_id)
    assert not (lay.vision & lay.text).any() and not (lay.pad & (lay.vision | lay.text)).any()
    assert torch.equal(lay.pad, b.inputs["attention_mask"] == 0)
    for r in range(2):
        imgs = lay.images[r]
        pos = torch.cat([im.positions for im in imgs])
        assert torch.equal(pos, lay.vision[r].nonzero().squeeze(1))
        q = lay.question[r].nonzero().squeeze(1)
        assert len(q) > 0 and q.min() > pos.max()  # question tokens come after the last image token
    if arch.startswith("qwen"):
        thw = b.inputs["image_grid_thw"]
        m = vlm.hf.config.vision_config.spatial_merge_size
        for k, im in enumerate(im for row in lay.images for im in row):
            rows, cols = im.grid
            assert (rows * m, cols * m) == tuple(thw[k, 1:].tolist())
        assert int(thw.prod(1).sum()) == b.inputs["pixel_values"].shape[0]
    if arch in ("llava", "llava_next"):
        n = vlm.hf.config.vision_config.image_size // vlm.hf.config.vision_config.patch_size
        for row in lay.images:
            main = row[0].main
            assert main.grid == (n, n)
    if arch == "llava_next":
        # image-newline tokens: vision tokens in no piece, one per row of the tile grid
        for row in lay.images:
            im = row[0]
            in_pieces = sum(p.positions.numel() for p in im.pieces)
            assert im.positions.numel() - in_pieces == im.pieces[1].grid[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_boxes_tile_the_image(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    for row in b.layout.images:
        for im in row:
            W, H = im.size
            for p in im.pieces:
                bx = p.boxes
                assert (bx[:, 0] >= -1e-4).all() and (bx[:, 2] <= W + 1e-4).all()
                assert (bx[:, 1] >= -1e-4).all() and (bx[:, 3] <= H + 1e-4).all()
                assert (bx[:, 2] > bx[:, 0]).all() and (bx[:, 3] > bx[:, 1]).all()
                # a regular grid without gaps or overlaps: areas add up to the covered rectangle
                area = ((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])).sum()
                cover = (bx[:, 2].max() - bx[:, 0].min()) * (bx[:, 3].max() - bx[:, 1].min())
                assert torch.isclose(area, cover, rtol=1e-4)
            full = [p for p in im.pieces if p.name in ("image", "base", "global")]
            if full and not (arch == "llava"):  # llava centre-crops: its grid covers the central square
                bx = full[0].boxes
                assert torch.isclose(bx[:, 2].max() - bx[:, 0].min(), torch.tensor(float(W)), rtol=1e-4)
                assert torch.isclose(bx[:, 3].max() - bx[:, 1].min(), torch.tensor(float(H)), rtol=1e-4)


def test_scatter_and_boxes_to_mask():
    vlm = zoo("qwen2_5_vl")
    b = batch(vlm, 2)
    lay = b.layout
    n = int(lay.num_vision[0])
    grids = lay.scatter(torch.arange(n, dtype=torch.float32), row=0)
    (rows, cols), = [p.grid for p in lay.images[0][0].pieces]
    assert torch.equal(grids[0]["image"], torch.arange(n, dtype=torch.float32).reshape(rows, cols))
    W, H = lay.images[0][0].size
    mask = lay.boxes_to_mask([[(0, 0, W / cols / 2, H / rows / 2)], []])  # inside the top-left token only
    assert mask[0].sum() == 1 and mask[0, lay.images[0][0].positions[0]] and mask[1].sum() == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_and_generate_match_hf(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    out = interp.intervene(vlm).forward(b)
    with torch.no_grad():
        ref = vlm.hf(**b.inputs).logits
    assert torch.equal(out.logits, ref)
    g = interp.intervene(vlm).generate(b, max_new_tokens=4)
    tok = vlm.tokenizer
    gref = vlm.hf.generate(**b.inputs, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(g.sequences, gref)
    assert g.texts == [t.strip() for t in tok.batch_decode(gref[:, b.input_ids.shape[1]:], skip_special_tokens=True)]


@pytest.mark.parametrize("arch", ARCHS)
def test_padded_batch_equals_single_rows(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    logits = interp.intervene(vlm).forward(b).logits
    for r in range(2):
        single = vlm.prepare(images=[images(2)[r]], questions=[QUESTIONS[r]])
        one = interp.intervene(vlm).forward(single).logits[0]
        T = one.shape[0]
        # left padding: the row's real tokens are its last T columns; positions differ only for M-RoPE-free
        # models by the pad offset, which causal attention with masked pads does not see
        torch.testing.assert_close(logits[r, -T:], one, atol=2e-5, rtol=1e-4)


def test_answers_are_marked():
    vlm = zoo("llava")
    b = vlm.prepare(images=images(2), questions=QUESTIONS[:2], answers=["red", "three"])
    lay = b.layout
    assert lay.answer.sum(1).tolist() == [1, 1]
    assert lay.answer[:, -1].all() and not (lay.answer & lay.question).any()
    assert lay.last[:, -2].all()


def test_bad_inputs():
    vlm = zoo("llava")
    img = images(1)[0]
    with pytest.raises(InputError, match="no image"):
        vlm.prepare(images=[None], questions=["what ?"])
    with pytest.raises(InputError, match="must be a str"):
        vlm.prepare(images=[img], questions=[3])
    with pytest.raises(InputError, match="image-token mismatch|rejected"):
        vlm.prepare(images=[img], questions=["<image> what ?"])  # more placeholders than images
    with pytest.raises(InputError, match="one per row"):
        vlm.prepare(images=[img, img], questions=["what ?"])
    with pytest.raises(InputError, match="offline"):
        interp.load("llava-hf/llava-1.5-7b-hf")
    from transformers import LlamaConfig, LlamaForCausalLM

    m = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2))
    with pytest.raises(UnsupportedModelError, match="LlavaForConditionalGeneration"):
        interp.load(m, processor=vlm.processor)
    assert issubclass(UnsupportedModelError, InterpError)


def test_load_from_directory(tmp_path):
    from interp.models import zoo as z

    for arch in ("llava", "qwen2_5_vl"):
        model, proc = z.build(arch)
        model.save_pretrained(tmp_path / arch)
        proc.save_pretrained(tmp_path / arch)
        vlm = interp.load(str(tmp_path / arch))
        b = batch(vlm, 1)
        with torch.no_grad():
            ref = model(**b.inputs).logits
        assert torch.equal(interp.intervene(vlm).forward(b).logits, ref)
        assert vlm.num_layers == 4 and vlm.adapter.name == arch


def test_generate_stops_like_hf_when_rows_finish_early():
    """The toy model ends its answers with EOS after a word or two: both generate paths (the greedy loop, and
    HF generate inside a trace, used for sampling/remote) must stop and pad exactly as HF does."""
    vlm = interp.toy.load()
    samples = interp.toy.dataset(4, seed=interp.toy.EVAL_SEED)
    b = vlm.prepare(images=[s.image for s in samples], questions=[s.question for s in samples])
    tok = vlm.tokenizer
    ref = vlm.hf.generate(**b.inputs, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert ref.shape[1] - b.input_ids.shape[1] < 8  # it did stop early
    loop = interp.intervene(vlm).generate(b, max_new_tokens=8)
    hf_path = interp.intervene(vlm).generate(b, max_new_tokens=8, repetition_penalty=1.0)
    ref2 = vlm.hf.generate(**b.inputs, max_new_tokens=8, do_sample=False, repetition_penalty=1.0,
                           pad_token_id=tok.pad_token_id)
    assert torch.equal(loop.sequences, ref)
    assert torch.equal(hf_path.sequences, ref2)
