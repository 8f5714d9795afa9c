"""The two-branch SBIR network: one shared module for both branches, stage-2 freezing (frozen
parameters and statistics bit-identical after a step, shared ones changed), stage-1 classifiers
that train the model's own early stages."""

from __future__ import annotations

import pytest
import torch

from hybridvision.errors import UserInputError
from hybridvision.retrieval.losses import contrastive_loss
from hybridvision.retrieval.two_branch import TwoBranchSBIR


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TwoBranchSBIR("resnet26", num_classes=4, width=0.25, hidden=32, embed_dim=16)


def _batch(n=4):
    return torch.rand(n, 1, 32, 32), torch.rand(n, 3, 32, 32), torch.tensor([0, 1, 2, 3][:n])


def test_both_branches_run_through_one_shared_module(model):
    calls = []
    model.shared.register_forward_hook(lambda *_: calls.append(1))
    model.head.register_forward_hook(lambda *_: calls.append(2))
    sketches, photos, _ = _batch()
    e_s, logits_s = model(sketches, "sketch")
    e_p, _ = model(photos, "photo")
    assert calls == [1, 2, 1, 2]
    assert e_s.shape == e_p.shape == (4, 16) and logits_s.shape == (4, 4)
    # the shared stages are not duplicated: every parameter belongs to exactly one place
    ids = [id(p) for p in model.parameters()]
    assert len(ids) == len(set(ids))
    assert not set(map(id, model.shared.parameters())) & set(map(id, model.unshared_parameters()))
    assert torch.allclose(model.embed(sketches, "sketch").norm(dim=1), torch.ones(4))


def test_stage_two_freezing_keeps_the_early_stages_bit_identical():
    torch.manual_seed(0)
    model = TwoBranchSBIR("resnet26", num_classes=4, stage=2, width=0.25, hidden=32, embed_dim=16)
    model.train()
    assert not model.sketch_early.training and model.shared.training
    early = {k: v.clone() for k, v in {**model.sketch_early.state_dict(prefix="s."),
                                       **model.photo_early.state_dict(prefix="p.")}.items()}
    shared = {k: v.clone() for k, v in model.shared.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=1e-4)
    sketches, photos, labels = _batch()
    e_s, l_s = model(sketches, "sketch")
    e_p, l_p = model(photos, "photo")
    loss = contrastive_loss(e_s, e_p, torch.tensor([True, False, True, False]))
    loss = loss + torch.nn.functional.cross_entropy(l_s, labels) + torch.nn.functional.cross_entropy(l_p, labels)
    loss.backward()
    opt.step()
    after = {**model.sketch_early.state_dict(prefix="s."), **model.photo_early.state_dict(prefix="p.")}
    assert all(torch.equal(early[k], after[k]) for k in early)  # weights and BN statistics
    assert any(not torch.equal(shared[k], v) for k, v in model.shared.state_dict().items())
    model.freeze_unshared(False)
    model.train()
    assert model.sketch_early.training
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("sketch_stage1."))
    assert not any(p.requires_grad for p in model.sketch_stage1.parameters())  # stage 1 is over


def test_stage_one_trains_each_branch_alone():
    """Stage 1: the sketch classifier runs through its private later stages (the shared ones get
    no gradient from it); the photo classifier runs through the shared ones."""
    torch.manual_seed(0)
    model = TwoBranchSBIR("resnet26", num_classes=4, stage=1, width=0.25, hidden=32, embed_dim=16)
    sketches, photos, labels = _batch()
    torch.nn.functional.cross_entropy(model.stage1_logits(sketches, "sketch"), labels).backward()
    assert all(p.grad is None for p in model.shared.parameters())
    assert all(p.grad is None for p in model.photo_early.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.sketch_early.parameters())
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model.stage1_logits(photos, "photo"), labels).backward()
    assert all(p.grad is None for p in model.sketch_stage1.parameters())
    assert any(p.grad is not None for p in model.shared.parameters())
    # the same weights serve every stage: a stage-1 state dict loads into a stage-2 model
    stage2 = TwoBranchSBIR("resnet26", num_classes=4, stage=2, width=0.25, hidden=32, embed_dim=16)
    stage2.load_state_dict(model.state_dict())
    assert not any(p.requires_grad for p in stage2.unshared_parameters())


def test_bad_branch_settings_are_refused():
    with pytest.raises(UserInputError, match="shared_stages"):
        TwoBranchSBIR("resnet26", num_classes=2, width=0.25, shared_stages=9)
    with pytest.raises(UserInputError, match="stage"):
        TwoBranchSBIR("resnet26", num_classes=2, width=0.25, stage=4)
    with pytest.raises(UserInputError, match="not a classification model"):
        TwoBranchSBIR("fcos_small", num_classes=2)
