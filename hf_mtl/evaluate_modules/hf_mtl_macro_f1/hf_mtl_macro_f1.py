"""hf_mtl's macro-F1 metric for sentence tasks. An `evaluate` module, loaded from this folder:
`evaluate.load(".../hf_mtl_macro_f1")`."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_CITATION = """
@article{scikit-learn,
    title={Scikit-learn: Machine Learning in {P}ython},
    author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V.
           and Thirion, B. and Grisel, O. and Blondel, M. and Prettenhofer, P.
           and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
           Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
    journal={Journal of Machine Learning Research},
    volume={12},
    pages={2825--2830},
    year={2011}
}
"""

_DESCRIPTION = """\
Macro-F1 is the unweighted mean over labels of each label's F1 = 2 * precision * recall / (precision + recall)
(scikit-learn's `f1_score` with `average="macro"`). Pass every label of the task as `labels`: a label that is neither
predicted nor gold then counts with F1 0, so the score does not depend on which labels a sample happens to hold.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`):
        Predicted label ids.
    references (`list[int]`):
        Gold label ids.
    labels (`list[int]`, *optional*):
        The labels to average over; by default those found in `predictions` or `references`.
    zero_division (`int` or `str`, *optional*, defaults to 0):
        The value of a precision, recall or F1 whose denominator is 0: 0, 1, or `"warn"` (0 with a warning).

Returns:
    `macro_f1` (`float`): between 0 and 1.

Examples:

    >>> macro_f1 = evaluate.load("hf_mtl/evaluate_modules/hf_mtl_macro_f1")
    >>> macro_f1.compute(predictions=[0, 0, 1, 1], references=[0, 1, 1, 1], labels=[0, 1, 2])
    {'macro_f1': 0.48888888888888893}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HfMtlMacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, zero_division=0):
        score = f1_score(references, predictions, labels=labels, average="macro", zero_division=zero_division)
        return {"macro_f1": float(score)}
