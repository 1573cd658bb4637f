"""crossent.torch's nn.Module drop-ins against torch.nn's."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _torch_helpers import assert_close, gen  # noqa: E402

import crossent.torch as ct  # noqa: E402

# --------------------------------------------------------------------------- modules


@pytest.mark.parametrize("kwargs", [{}, {"weight": torch.tensor([1.0, 2.0, 0.5])}, {"reduction": "sum"},
                                    {"ignore_index": 1, "label_smoothing": 0.1}])
def test_cross_entropy_module_matches_torch_state_dict_repr_and_values(kwargs):
    ours, theirs = ct.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    assert dict(ours.named_buffers()).keys() == dict(theirs.named_buffers()).keys()
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 3, generator=gen())
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(ours(x, y), theirs(x, y))


def test_modules_follow_to_dtype_and_legacy_arguments():
    ours = ct.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0])).double()
    assert ours.weight.dtype == torch.float64
    with pytest.warns(UserWarning):
        legacy = ct.CrossEntropyLoss(size_average=False)
    assert legacy.reduction == "sum"
    assert repr(ct.CrossEntropyLoss(z_loss=1e-4)) == "CrossEntropyLoss(z_loss=0.0001)"
    x = torch.randn(5, 2, generator=gen(), dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    assert_close(ours(x, y), F.cross_entropy(x, y, weight=ours.weight))


@pytest.mark.parametrize("kwargs", [{}, {"pos_weight": torch.tensor([2.0, 0.5])}, {"weight": torch.ones(2)},
                                    {"reduction": "none"}])
def test_bce_module_matches_torch(kwargs):
    ours, theirs = ct.BCEWithLogitsLoss(**kwargs), torch.nn.BCEWithLogitsLoss(**kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert isinstance(ours, torch.nn.BCEWithLogitsLoss)
    x = torch.randn(4, 2, generator=gen())
    y = torch.rand(4, 2, generator=gen(1))
    torch.testing.assert_close(ours(x, y), theirs(x, y))
