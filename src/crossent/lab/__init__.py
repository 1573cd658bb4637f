"""The lab: the article's argument for cross-entropy as experiments, figures and an HTML report.

Needs the ``lab`` extra (matplotlib, scikit-learn, tqdm); nothing here is
imported by ``import crossent``.  Run ``crossent report`` or ``python -m crossent.lab``.
"""

from .models import HEADS, MLP, Neuron, expected_calibration_error, head_loss_and_grad, neuron_loss_and_grad_z
from .report import run_report

__all__ = ["HEADS", "MLP", "Neuron", "expected_calibration_error", "head_loss_and_grad", "neuron_loss_and_grad_z", "run_report"]
