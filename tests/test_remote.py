"""remote="local": nnsight serializes each trace as for NDIF (user modules hidden on deserialize) and runs it
here. Every primitive must give the local result, and the payload must carry interp's code by value."""

import pytest
import torch

import interp
from nnsight.schema.request import RequestModel

from conftest import batch


@pytest.fixture(scope="module")
def pair():
    from interp.models import zoo as z

    model, proc = z.build("llava")
    local = interp.load(model, processor=proc)
    remote = interp.load(model, processor=proc, remote="local")
    return local, remote


@pytest.fixture
def payloads(monkeypatch):
    blobs = []
    orig = RequestModel.serialize

    def spy(tracer, *a, **k):
        blob = orig(tracer, *a, **k)
        blobs.append(blob)
        return blob

    monkeypatch.setattr(RequestModel, "serialize", staticmethod(spy))
    return blobs


def test_primitives_match_local(pair, payloads):
    local, remote = pair
    b = batch(local, 2)
    nv = int(b.layout.num_vision.max())
    w = torch.softmax(torch.randn(2, nv), -1)
    ivs = [(), (interp.EdgeMask("question", "vision"),), (interp.EdgeMask("text", "vision", layers=(1,)),),
           (interp.InjectAttention((2,), "question", "vision", w, alpha=0.5),),
           (interp.Patch("resid", (1,), "vision", b),)]
    for extra in ivs:
        a = interp.intervene(local, *extra).forward(b).logits
        r = interp.intervene(remote, *extra).forward(b).logits
        assert torch.equal(a, r), extra
    sa = interp.capture(local, b)
    sr = interp.capture(remote, b)
    torch.testing.assert_close(sa.vision_max, sr.vision_max, atol=0, rtol=0, equal_nan=True)
    ga = interp.intervene(local, interp.EdgeMask("text", "vision")).generate(b, max_new_tokens=3)
    gr = interp.intervene(remote, interp.EdgeMask("text", "vision")).generate(b, max_new_tokens=3)
    assert torch.equal(ga.sequences, gr.sequences)
    assert payloads, "no request was serialized"
    blob = payloads[-1]
    # a string literal inside the engine's site walk only travels if the code goes by value
    assert b"interp planned" in blob
    assert len(blob) < sum(p.numel() * 4 for p in local.hf.parameters())  # weights never travel


def test_aif_remote_falls_back_to_two_passes(pair):
    local, remote = pair
    b = batch(local, 2)
    a = interp.intervene(local, interp.AIF(reuse_prefix=False)).forward(b)
    r = interp.intervene(remote, interp.AIF()).forward(b)
    d = r.diagnostics["aif"]
    assert not d["reuse"] and "remote" in d["reuse_reason"]
    assert torch.equal(a.logits, r.logits)
    assert torch.equal(a.diagnostics["aif"]["kept"], d["kept"])
