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


def test_stage_two_freezing_keeps_the_early_stages_bit_identical(model):
    model.freeze_unshared(True)
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
    assert model.sketch_early.training and all(p.requires_grad for p in model.parameters())


def test_stage_one_classifiers_train_the_models_early_stages(model):
    clf = model.branch_classifier("photo")
    assert clf.early is model.photo_early and clf.late is not model.shared
    before = [p.clone() for p in model.photo_early.parameters()]
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    _, photos, labels = _batch()
    torch.nn.functional.cross_entropy(clf(photos), labels).backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.photo_early.parameters()))
    model.adopt_photo_classifier(clf)
    assert all(torch.equal(a, b) for a, b in zip(model.shared.state_dict().values(), clf.late.state_dict().values()))


def test_bad_branch_settings_are_refused():
    with pytest.raises(UserInputError, match="shared_stages"):
        TwoBranchSBIR("resnet26", num_classes=2, width=0.25, shared_stages=9)
    with pytest.raises(UserInputError, match="not a classification model"):
        TwoBranchSBIR("fcos_small", num_classes=2)
