"""Drop-ins for ``torch.nn.CrossEntropyLoss`` and ``torch.nn.BCEWithLogitsLoss``.

Subclasses of torch's own modules, so constructors, buffers, ``state_dict``,
``repr`` and ``isinstance`` checks are torch's; ``forward`` calls
:mod:`crossent.torch.functional`.
"""

from __future__ import annotations

import torch

from crossent._rules import CrossEntropyOptions

from .functional import binary_cross_entropy_with_logits, cross_entropy_with_options

__all__ = ["CrossEntropyLoss", "BCEWithLogitsLoss"]


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """Drop-in for ``torch.nn.CrossEntropyLoss`` computed by :func:`crossent.torch.cross_entropy`.

    Same constructor, buffers (``weight``), ``state_dict`` and ``repr``; an
    ``isinstance`` check against torch's class still holds.  Extra keywords:
    ``z_loss`` and ``inplace_backward`` (see :func:`crossent.torch.cross_entropy`).
    The options are checked when the module is built (torch checks them later)
    and once per call, as they are attributes that may change in between.

    Examples:
        >>> import torch
        >>> from crossent.torch import CrossEntropyLoss
        >>> CrossEntropyLoss(weight=torch.ones(3)).state_dict()
        OrderedDict([('weight', tensor([1., 1., 1.]))])
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0, *, z_loss=0.0, inplace_backward=False):
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = self._options(z_loss).z_loss  # torch.nn mapped size_average/reduce onto self.reduction
        self.inplace_backward = bool(inplace_backward)

    def _options(self, z_loss=None) -> CrossEntropyOptions:
        return CrossEntropyOptions.check(label_smoothing=self.label_smoothing, ignore_index=self.ignore_index,
                                         z_loss=self.z_loss if z_loss is None else z_loss, reduction=self.reduction)

    def extra_repr(self) -> str:
        extra = [f"z_loss={self.z_loss}"] * bool(self.z_loss) + ["inplace_backward=True"] * self.inplace_backward
        return ", ".join(extra)

    def forward(self, input, target):
        return cross_entropy_with_options(input, target, self.weight, self._options(),
                                          inplace_backward=self.inplace_backward)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """Drop-in for ``torch.nn.BCEWithLogitsLoss`` computed by :func:`crossent.torch.binary_cross_entropy_with_logits`.

    Same constructor, buffers (``weight``, ``pos_weight``), ``state_dict`` and ``repr``.

    Examples:
        >>> import torch
        >>> from crossent.torch import BCEWithLogitsLoss
        >>> BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))
        BCEWithLogitsLoss()
    """

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                pos_weight=self.pos_weight)
