"""crossent.torch as a package: import hygiene, the public names, one idea per short module."""

import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import crossent.torch as ct  # noqa: E402

PUBLIC = ["cross_entropy", "binary_cross_entropy_with_logits", "linear_cross_entropy", "linear_log_probs_and_entropy",
          "CrossEntropyLoss", "BCEWithLogitsLoss", "default_chunk_size"]
DISTRIBUTED = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy",
               "vocab_parallel_linear_log_probs_and_entropy", "global_denominator"]  # imported on first use


def test_import_crossent_does_not_import_torch():
    code = "import sys, crossent; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_crossent_torch_uses_the_real_torch_despite_its_name():
    code = ("import crossent.torch as ct, torch, sys; "
            "assert torch.__name__ == 'torch' and hasattr(torch, 'nn'); "
            "assert ct.torch is sys.modules['torch']; assert sys.modules['crossent.torch'] is ct")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_public_names_are_re_exported_and_nothing_else_is_public():
    from crossent.torch import (  # noqa: F401
        BCEWithLogitsLoss,
        CrossEntropyLoss,
        binary_cross_entropy_with_logits,
        default_chunk_size,
        linear_cross_entropy,
        linear_log_probs_and_entropy,
    )

    assert ct.__all__ == PUBLIC + DISTRIBUTED and all(callable(getattr(ct, name)) for name in ct.__all__)
    assert ct.cross_entropy is ct.functional.cross_entropy and ct.CrossEntropyLoss is ct.modules.CrossEntropyLoss
    assert not hasattr(ct, "_kernels")  # the kernels are always importable: no fallback path


def test_every_module_is_short_enough_to_read_in_one_sitting():
    for path in pathlib.Path(ct.__file__).parent.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path.name


def test_the_fused_paths_are_registered_custom_operators():
    assert torch.ops.crossent.softmax_cross_entropy.default is not None
    assert torch.ops.crossent.sigmoid_binary_cross_entropy.default is not None
