"""crossent.torch as a package: import hygiene and the public names."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import crossent.torch as ct  # noqa: E402
from _torch_helpers import (  # noqa: E402
    assert_close, gen, linear_value_and_grads, reference_z_loss_rows, upstream_for, value_and_grad)


# --------------------------------------------------------------------------- import hygiene


def test_import_crossent_does_not_import_torch():
    code = "import sys, crossent; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_crossent_torch_uses_the_real_torch_despite_its_name():
    code = ("import crossent.torch as ct, torch, sys; "
            "assert torch.__name__ == 'torch' and hasattr(torch, 'nn'); "
            "assert ct.torch is sys.modules['torch']; assert sys.modules['crossent.torch'] is ct")
    subprocess.run([sys.executable, "-c", code], check=True)
