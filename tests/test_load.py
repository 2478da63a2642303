"""`interp.load` keeps a user's model as built: its attention implementation and train/eval mode."""

import warnings

import pytest
import interp
from interp.errors import InputError
from interp.models import zoo as Z


@pytest.mark.parametrize("built,requested,expected", [
    ("eager", None, "eager"),  # kept
    ("sdpa", None, "sdpa"),
    ("eager", "sdpa", "sdpa"),  # switched only when asked
    ("sdpa", "eager", "eager"),
])
def test_load_keeps_the_attention_implementation_unless_asked(built, requested, expected):
    model, proc = Z.build("llava")
    model.set_attn_implementation(built)
    vlm = interp.load(model, processor=proc, attn_implementation=requested, check=False)
    assert vlm.attn_implementation == expected
    assert model.config.get_text_config()._attn_implementation == expected


def test_load_keeps_train_mode_and_says_why_it_matters():
    model, proc = Z.build("llava")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interp.load(model, processor=proc, check=False)
    assert not model.training
    model.train()
    with pytest.warns(UserWarning, match="train mode: dropout"):
        interp.load(model, processor=proc, check=False)
    assert model.training and all(m.training for m in model.modules())


def test_load_refuses_attention_it_cannot_read(monkeypatch):
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # registered for this test only (AttentionInterface.register writes the class-wide table, for good)
    monkeypatch.setitem(AttentionInterface._global_mapping, "custom_sdpa", sdpa_attention_forward)
    model, proc = Z.build("llava")
    model.set_attn_implementation("custom_sdpa")
    with pytest.raises(InputError, match="attn_implementation='custom_sdpa'.*pass attn_implementation='sdpa'"):
        interp.load(model, processor=proc)
    with pytest.raises(InputError, match="must be one of"):
        interp.load(model, processor=proc, attn_implementation="flash_attention_2")
    vlm = interp.load(model, processor=proc, attn_implementation="sdpa")  # the fix the message gives
    assert vlm.attn_implementation == "sdpa"
